"""Generation and scoring backends behind one protocol (see `base.Engine`)."""

from __future__ import annotations

from tokenmill.engines.base import Engine, Generation, SamplingParams, Scored
from tokenmill.errors import EngineError

ENGINES = ("hf", "vllm")


def get_engine(kind: str, model: str, **options) -> Engine:
    """Build engine `kind` ("hf" or "vllm") for `model` (bundled name, path or hub id)."""
    if kind == "hf":
        from tokenmill.engines.hf import HFEngine

        return HFEngine(model, **options)
    if kind == "vllm":
        from tokenmill.engines.vllm import VLLMEngine

        return VLLMEngine(model, **options)
    raise EngineError(f"unknown engine {kind!r}", fix=f"use one of: {', '.join(ENGINES)}")


__all__ = ["Engine", "Generation", "SamplingParams", "Scored", "get_engine", "ENGINES"]
