"""What a rollouts run draws and how it samples: sources, sampling, engine (`rollouts` flow)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tokenmill.common_config import DEFAULT_LAKE, RunId, RunnerConfig, Settings, new_run_id


class SourceConfig(Settings):
    """A prompt source: a built-in world (`world: arithmetic`) or a file (`path: x.jsonl`)."""

    world: str | None = None
    path: str | None = None
    n: int = Field(32, ge=1, description="prompts to draw from a world")
    split: str = "test"
    seed: int = 0
    limit: int | None = Field(None, description="read at most this many records of a file")
    prompt_field: str = "prompt"
    reference_field: str | None = None
    split_field: str | None = Field(None, description="record field holding each prompt's split (train/test)")
    meta_fields: list[str] = Field([], description="record fields copied into prompt meta: PATH (kept under its name) "
                                                    "or KEY=PATH, e.g. tests=test_list for the code-tests verifier")
    verifier: str | None = Field(None, description="how rollouts of this source are checked (tasks/verifiers.py: "
                                                    "text, math, regex, code-tests, reference-match); default: the "
                                                    "world's own, else reference-match where there is a reference")

    @field_validator("path")
    @classmethod
    def _one_kind(cls, v, info):
        if v is not None and info.data.get("world") is not None:
            raise ValueError("give either world or path, not both")
        return v

    def label(self) -> str:
        return f"world:{self.world}" if self.world else str(self.path)

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, v):
        if v is not None:
            from tokenmill.tasks.verifiers import get_verifier

            get_verifier(v)
        return v


class SamplingConfig(Settings):
    n: int = Field(4, ge=1, description="samples per prompt")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(96, ge=1)
    seed: int = 0
    logprobs: int = Field(5, ge=0, le=20, description="top-k alternatives kept per token")
    stop: list[str] = Field([], description="a completion also ends after the token completing one of these strings")
    stop_token_ids: list[int] = Field([], description="a completion also ends at these token ids (besides every EOS id)")


class RolloutConfig(Settings):
    lake: str = DEFAULT_LAKE
    run_id: RunId = Field(default_factory=new_run_id)
    sources: list[SourceConfig] = [SourceConfig(world="arithmetic")]
    models: list[str] = Field(["tiny-small"], description="bundled name, local path or hub id of each model")
    engine: str = Field("hf", description="hf (transformers) or vllm")
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to the engine: e.g. max_model_len, tensor_parallel_size (vllm); device, dtype, batch_size (hf)",
    )
    sampling: SamplingConfig = SamplingConfig()
    chat_template: Literal["auto", "none"] = Field(
        "auto", description="auto: render prompts with each model's chat template where it has one; none: raw text")
    system_prompt: str | None = Field(None, description="system message (None: the chat template's own default)")
    shard_size: int = Field(64, ge=1, description="prompts per generation shard (one Prefect task each)")
    runner: RunnerConfig = RunnerConfig()

    def shard_tokens(self) -> int:
        """Most tokens one generate-shard task produces (its timeout's work)."""
        return self.shard_size * self.sampling.n * self.sampling.max_tokens

    def work_tokens(self) -> int:
        """Most tokens the whole run generates (the flow timeout's work); a file source
        without a limit counts as 10,000 prompts."""
        prompts = sum(s.n if s.world else (s.limit or 10_000) for s in self.sources)
        return prompts * self.sampling.n * self.sampling.max_tokens * len(self.models)
