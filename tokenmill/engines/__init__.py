"""Generation and scoring backends behind one protocol (see `base.Engine`)."""

from __future__ import annotations

import importlib.util
import sys

from tokenmill.engines.base import Engine, Generation, SamplingParams, Scored, vllm_missing  # noqa: F401
from tokenmill.errors import EngineError

ENGINES = ("hf", "vllm")

def capabilities(kind: str) -> frozenset[str]:
    """What engine `kind` can give, as its class declares (`capabilities`); importing the
    class does not import vLLM itself."""
    if kind not in ENGINES:
        check_engine(kind)
    if kind == "hf":
        from tokenmill.engines.hf import HFEngine as cls
    else:
        from tokenmill.engines.vllm import VLLMEngine as cls
    return cls.capabilities


def engine_for(needs, kind: str = "hf", options: dict | None = None) -> tuple[str, dict]:
    """(engine, options) for a model that must give `needs`: the requested engine with its
    options where it has them all, else the first engine that does, with its defaults (the
    options were written for the other engine)."""
    needs = frozenset(needs)
    if needs <= capabilities(kind):
        return kind, dict(options or {})
    for other in ENGINES:
        if needs <= capabilities(other):
            return other, {}
    raise EngineError(f"no engine gives {', '.join(sorted(needs))}", fix=f"engines: {', '.join(ENGINES)}")


def load_tokenizer(model: str):
    """A model's tokenizer alone (no weights), cached: what labelers need for token text."""
    from tokenmill.engines.hf import load_tokenizer as load

    return load(model)


def tokenizer_difference(a, b) -> str | None:
    """How two tokenizers differ (vocabulary or special token ids), or None when one token id
    means the same text under both: what passing token ids from one model to another needs."""
    if a is b:
        return None
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        diff = sorted(set(va.items()) ^ set(vb.items()))[:3]
        return f"vocabularies differ ({len(va)} vs {len(vb)} entries; e.g. {diff})"
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if getattr(a, attr) != getattr(b, attr):
            return f"{attr} differs ({getattr(a, attr)} vs {getattr(b, attr)})"
    return None


def context_limit(model: str, options: dict | None = None) -> int | None:
    """Most tokens (prompt + completion) `model` takes, from its config and a `max_model_len`
    engine option, without loading weights; None when unknown."""
    from tokenmill.models.registry import resolve_model

    limits = [int(options["max_model_len"])] if (options or {}).get("max_model_len") else []
    try:
        from transformers import AutoConfig

        limit = getattr(AutoConfig.from_pretrained(resolve_model(model).path), "max_position_embeddings", None)
    except (OSError, ValueError):  # no config readable here: the engine says so when it loads
        limit = None
    if limit:
        limits.append(int(limit))
    return min(limits) if limits else None


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


__all__ = ["capabilities", "engine_for", "Engine", "Generation", "SamplingParams", "Scored", "get_engine", "check_engine", "load_tokenizer", "ENGINES",
           "context_limit", "tokenizer_difference"]
