"""Settings of the token-weighted trainer (`weighted.py`) and of the `train` flow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, RunnerConfig, Settings


class TrainSettings(Settings):
    """How a token-weighted trainer runs (`tasks/train/weighted.py`)."""

    objective: Literal["sft", "dpo"] = "sft"
    weighting: Literal["dataset", "plain", "tgdpo"] = Field(
        "dataset", description="dataset: the curated weights; plain: loss masks only; tgdpo: TGDPO from token rewards")
    steps: int = Field(100, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    beta: float = Field(0.1, gt=0, description="dpo: β")
    alpha: float = Field(0.5, ge=0, description="tgdpo: α")
    seed: int = 0


class TrainConfig(TrainSettings):
    """What the `train` flow runs: a base model trained on a curated dataset."""

    lake: str = DEFAULT_LAKE
    dataset_id: str
    model: str = "tiny-small"
    run_id: str | None = Field(None, description="run whose partition gets the artifact and metrics (default: the dataset's first)")
    runner: RunnerConfig = RunnerConfig()

    def work_tokens(self) -> int:
        """Token passes of training (its timeout's work): steps × sequences × 512 tokens ×
        3 (forward and backward), × 2 for DPO's chosen and rejected."""
        return self.steps * self.batch * self.grad_accum * 512 * 3 * (2 if self.objective == "dpo" else 1)
