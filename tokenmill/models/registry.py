"""Model specs: a bundled tiny model by name, a local directory, or a hub id.

Bundled models live in `tokenmill/models/tiny/<name>/` (config, safetensors, tokenizer).
A hub id loads through the same transformers/vLLM code path as a local directory.
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


def resolve_model(name_or_path: str) -> ModelRef:
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
                f"or a bundled model: {', '.join(BUNDLED)}",
            )
        return ModelRef(name_or_path, str(p.resolve()))
    return ModelRef(name_or_path, name_or_path)  # hub id: org/name
