"""Settings of R2R router training and routed generation (`router.py`, `routed.py`)."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, Settings


class RouterConfig(Settings):
    """What the `train-router` flow runs: R2R's router on a run's routing labels, then
    routed generation against small-only, large-only and random routing."""

    lake: str = DEFAULT_LAKE
    run_id: str
    config_id: str | None = Field(None, description="routing labels of this labeller config (default: the only one)")
    steps: int = Field(600, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch: int = Field(256, ge=1)
    val_frac: float = Field(0.2, gt=0, lt=1, description="share of prompts held out to set the threshold")
    recall: float = Field(0.95, gt=0, le=1, description="threshold: lowest positive rate with this recall of divergent tokens")
    seed: int = 0
    evaluate: bool = True
    eval_world: str = "arithmetic"
    eval_prompts: int = Field(128, ge=1)
    eval_split: str = "test"
    max_tokens: int = Field(96, ge=1)
    thresholds: list[float] = Field(default_factory=lambda: [0.5], description="more router thresholds for the curve")
