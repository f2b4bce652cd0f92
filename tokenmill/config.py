"""Run configuration: one place for defaults, validated by pydantic.

Flows take these models as parameters, so a Prefect deployment, the CLI and a test
describe a run the same way.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field, field_validator

from tokenmill import ids

DEFAULT_LAKE = "./tokenmill-lake"


def new_run_id(prefix: str = "run") -> str:
    now = datetime.now(timezone.utc)
    return f"{prefix}-{now:%Y%m%dT%H%M%S}-{ids.content_id(now.isoformat())[:6]}"


class SourceConfig(BaseModel):
    """A prompt source: a built-in world (`world: arithmetic`) or a file (`path: x.jsonl`)."""

    world: str | None = None
    path: str | None = None
    n: int = Field(32, ge=1, description="prompts to draw from a world")
    split: str = "test"
    seed: int = 0
    limit: int | None = Field(None, description="read at most this many records of a file")
    prompt_field: str = "prompt"
    reference_field: str | None = None
    meta_fields: list[str] = []

    @field_validator("path")
    @classmethod
    def _one_kind(cls, v, info):
        if v is not None and info.data.get("world") is not None:
            raise ValueError("give either world or path, not both")
        return v

    def label(self) -> str:
        return f"world:{self.world}" if self.world else str(self.path)


class SamplingConfig(BaseModel):
    n: int = Field(4, ge=1, description="samples per prompt")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(96, ge=1)
    seed: int = 0
    logprobs: int = Field(5, ge=0, le=20, description="top-k alternatives kept per token")


class RolloutConfig(BaseModel):
    lake: str = DEFAULT_LAKE
    run_id: str = Field(default_factory=new_run_id)
    sources: list[SourceConfig] = [SourceConfig(world="arithmetic")]
    models: list[str] = ["tiny-small", "tiny-large"]
    engine: str = "hf"
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to the engine: e.g. max_model_len, tensor_parallel_size (vllm); device, dtype, batch_size (hf)",
    )
    sampling: SamplingConfig = SamplingConfig()
    shard_size: int = Field(64, ge=1, description="prompts per generation shard (one Prefect task each)")
