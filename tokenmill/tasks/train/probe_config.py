"""Settings of hallucination-probe training (`probe.py`)."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, Settings


class ProbeConfig(Settings):
    """What the `train-probe` flow runs: a hallucination probe per model of a labelled run."""

    lake: str = DEFAULT_LAKE
    run_id: str
    models: list[str] | None = Field(None, description="probe these models' rollouts (default: every model with spans)")
    layer: int = Field(-2, description="hidden_states index (0 = embeddings; negative from the last layer)")
    config_id: str | None = Field(None, description="hallucination spans of this labeller config (default: the only one)")
    steps: int = Field(400, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    lambda_max: float = Field(0.5, ge=0, le=1, description="final weight of the span-max term")
    anneal: float = Field(0.5, gt=0, le=1, description="share of the steps over which that weight grows from 0")
    val_frac: float = Field(0.25, gt=0, lt=1, description="share of prompts held out for evaluation")
    seed: int = 0
