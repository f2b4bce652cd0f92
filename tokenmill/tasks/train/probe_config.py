"""Settings of hallucination-probe training (`probe.py`)."""

from __future__ import annotations

from typing import Literal

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
    lambda_max: float = Field(1.0, ge=0, le=1, description="final weight of the span-max term (upstream: 1, the "
                                                           "loss ends span-level; tokenmill's earlier default 0.5)")
    anneal: float = Field(1.0, gt=0, le=1, description="share of the steps over which that weight grows from 0 "
                                                       "(upstream anneal_warmup: 1.0; tokenmill's earlier 0.5)")
    token_weighting: Literal["span", "balanced"] = Field(
        "span", description="token BCE weights: span — every token of a labelled span ×`span_weight`, the rest ×1 "
                            "(upstream's pos/neg weights); balanced — positives ×n_neg/n_pos (tokenmill's variant)")
    span_weight: float = Field(10.0, gt=0, description="token weighting span: weight of span tokens")
    outside: Literal["negative", "ignore"] = Field(
        "negative", description="tokens outside every span: negative — label 0 (upstream's long-form setting); "
                                "ignore — left out (tokenmill's variant)")
    val_frac: float = Field(0.25, gt=0, lt=1, description="share of prompts held out for evaluation")
    seed: int = 0
