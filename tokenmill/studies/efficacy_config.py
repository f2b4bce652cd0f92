"""Settings of the efficacy study (`tokenmill study efficacy`, the `efficacy` flow and deployment)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tokenmill.common_config import RunId, Settings

DEFAULT_ARMS = ["dpo", "cdpo", "sft", "sft-critical", "sft-reward", "sft-process", "sft-entropy", "sft-routing",
                "dpo-on-sft", "cdpo-on-sft"]


class EfficacyConfig(Settings):
    """One pipeline per seed (seed = sampling + contrast models + training), every arm on that
    seed's data, each model's greedy accuracy on the same held-out prompts; then the summary
    with paired 95 % intervals and its plot."""

    lake: str = "./tokenmill-study"
    run_prefix: RunId = Field("efficacy", description="seed s writes run <run_prefix>-s<s>; may hold {date}")
    policy: str = Field("tiny-small", description="the policy: the base of every arm and the model to beat")
    teacher: str | None = Field("tiny-large", description="distillation: this model's rollouts are the data; None: "
                                                          "the policy's own (no headroom on the tiny models: "
                                                          "docs/BENCHMARKS.md)")
    seeds: list[int] = Field([0, 1, 2, 3, 4], min_length=1)
    prompts: int = Field(4096, ge=1, description="training prompts per seed (distinct prompts: the SFT arms "
                                                 "overfit 512 — docs/BENCHMARKS.md)")
    samples: int = Field(2, ge=1, description="samples per prompt (temperature 1)")
    eval_prompts: int = Field(500, ge=1, description="held-out test prompts, the same for every arm and seed")
    critical_steps: int = Field(150, ge=1, description="contrast-model steps (cDPO's p_CE)")
    arms: list[str] = Field(default_factory=lambda: list(DEFAULT_ARMS), min_length=1)
    batch: int = Field(16, ge=1)
    # cDPO's authors' learning rate, β and schedule (their train_config.py; they train LoRA for 3 epochs,
    # here the full model, 300 steps ≈ 4.6 epochs of ~1,040 pairs); docs/BENCHMARKS.md has both settings' runs
    dpo: dict[str, Any] = Field(default_factory=lambda: {"steps": 300, "lr": 4e-5, "beta": 0.1, "schedule": "linear"},
                                description="TrainSettings of the DPO-side arms")
    sft: dict[str, Any] = Field(default_factory=lambda: {"steps": 500, "lr": 1e-3, "schedule": "linear"},
                                description="TrainSettings of the SFT-side arms")
    engine: str = "hf"
    parallel: int = Field(5, ge=1, description="seeds run at once, each pipeline in a process of its own with "
                                               "max(1, cores / parallel) torch threads; the default runs the five "
                                               "seeds together (~0.9 GB each on the tiny models): no seed alone at the "
                                               "end, and one's waits on the Prefect API fill with another's work")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v
