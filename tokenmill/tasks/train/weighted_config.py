"""Settings of the token-weighted trainer (`weighted.py`) and of the `train` flow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tokenmill.common_config import DEFAULT_LAKE, RunnerConfig, Settings


def default_weighting(values: dict) -> dict:
    """`values` with tdpo's only weighting, plain, where none is given (the field's default,
    dataset, is not one tdpo has)."""
    if values.get("objective") == "tdpo" and values.get("weighting") is None:
        return {**values, "weighting": "plain"}
    return values


class TrainSettings(Settings):
    """How a token-weighted trainer runs (`tasks/train/weighted.py`)."""

    objective: Literal["sft", "dpo", "tdpo"] = Field(
        "sft", description="sft (sequences); dpo or tdpo (pairs; TDPO: DPO with a token-level KL term)")
    weighting: Literal["dataset", "plain", "tgdpo"] = Field(
        "dataset", description="dataset: the curated weights; plain: loss masks only; tgdpo: TGDPO from token rewards "
                               "(tdpo: plain, its only one and its default)")
    steps: int = Field(100, ge=1)
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["constant", "linear"] = Field(
        "constant", description="learning rate over the steps: constant, or linear decay from lr to 0 (TRL's "
                                "default lr_scheduler_type, no warm-up); an annealed small model needs the decay "
                                "(docs/BENCHMARKS.md, efficacy)")
    warmup: float = Field(0.0, ge=0, lt=1, description="share of the steps over which the learning rate rises "
                                                       "linearly from 0 first: ⌈warmup · steps⌉ steps, as HF's "
                                                       "warmup_ratio (cDPO's authors: 0.1); 0: none")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay, on every weight but biases and "
                                                       "norms (HF Trainer's rule; cDPO's authors: 0.01); 0: none")
    batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    beta: float = Field(0.1, gt=0, description="dpo, tdpo: β")
    alpha: float = Field(0.5, ge=0, description="tgdpo: α")
    rpo_alpha: float = Field(0.0, ge=0, description="dpo, tdpo: α of RPO's NLL term on the chosen tokens (Pang et al. "
                                                    "2024; TRL loss_type sigmoid+sft); 0: off, plain (c)DPO")
    tdpo_alpha: float = Field(0.5, ge=0, description="tdpo2: α, the weight of the sequential-KL term (the TDPO authors' 0.5)")
    tdpo_variant: Literal["tdpo1", "tdpo2"] = Field(
        "tdpo1", description="tdpo1: the KL difference as is; tdpo2: α times it, no gradient through the chosen side's "
                             "KL (the authors' config default is tdpo1; their README advises tdpo2 at higher learning rates)")
    keep_start: float | None = Field(
        None, gt=0, le=1, description="sft: D³S's dynamic keep schedule — the share of each batch's highest-weight "
                                      "tokens trained at the first step (weights become 0/1); off when unset")
    keep_end: float = Field(1.0, gt=0, le=1, description="sft: that share at the last step (linear in between)")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _tdpo_weighting(cls, data):
        return default_weighting(data) if isinstance(data, dict) else data


class TrainConfig(TrainSettings):
    """What the `train` flow runs: a base model trained on a curated dataset."""

    lake: str = DEFAULT_LAKE
    dataset_id: str
    model: str = "tiny-small"
    run_id: str | None = Field(None, description="run whose partition gets the artifact and metrics (default: the dataset's first)")
    runner: RunnerConfig = RunnerConfig()

    def work_tokens(self) -> int:
        """Token passes of training (its timeout's work): steps × sequences × 512 tokens ×
        3 (forward and backward; 4 for TDPO, whose reference runs alongside), × 2 for (T)DPO's
        chosen and rejected."""
        passes = 4 if self.objective == "tdpo" else 3
        return self.steps * self.batch * self.grad_accum * 512 * passes * (2 if self.objective in ("dpo", "tdpo") else 1)
