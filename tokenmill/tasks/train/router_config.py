"""Settings of R2R router training and routed generation (`router.py`, `routed.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tokenmill.common_config import DEFAULT_LAKE, Settings

# R2R's router training (thu-nics/R2R resource/default_training_config.json, commit 560f5ec):
# 6 blocks of width 1024 with expansion 4, AdamW lr 5e-5, weight decay 5e-4, batch 1024, up to 50
# epochs, early stopping after 10 epochs without a lower validation loss, the best epoch kept.
R2R_ROUTER = {"hidden": 1024, "blocks": 6, "expansion": 4, "lr": 5e-5, "weight_decay": 5e-4, "batch": 1024,
              "epochs": 50, "patience": 10}


class RouterConfig(Settings):
    """What the `train-router` flow runs: R2R's router on a run's routing labels, then
    routed generation against small-only, large-only and random routing."""

    lake: str = DEFAULT_LAKE
    run_id: str
    config_id: str | None = Field(None, description="routing labels of this labeller config (default: the only one)")
    recipe: Literal["tokenmill", "r2r"] = Field(
        "tokenmill", description="r2r: R2R's training settings for every field not given (R2R_ROUTER); tokenmill: "
                                 "a smaller router, sized for the bundled models, trained a fixed number of steps")
    steps: int = Field(600, ge=1, description="optimizer steps (when epochs is unset)")
    epochs: int | None = Field(None, ge=1, description="train by epochs over the training tokens instead of steps, "
                                                       "keeping the epoch of lowest validation loss")
    patience: int | None = Field(None, ge=1, description="epochs: stop after this many without a lower validation loss")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    batch: int = Field(256, ge=1)
    width: int = Field(128, ge=1, description="router: projection width of each input")
    hidden: int = Field(256, ge=1, description="router: width of the residual MLP blocks")
    blocks: int = Field(2, ge=1, description="router: residual MLP blocks")
    expansion: int = Field(2, ge=1, description="router: MLP expansion factor inside a block")
    val_frac: float = Field(0.2, gt=0, lt=1, description="share of prompts held out to set the threshold")
    recall: float = Field(0.95, gt=0, le=1, description="threshold: lowest positive rate with this recall of divergent tokens")
    seed: int = 0
    evaluate: bool = True
    eval_world: str = "arithmetic"
    eval_prompts: int = Field(128, ge=1)
    eval_split: str = "test"
    max_tokens: int = Field(96, ge=1)
    thresholds: list[float] = Field(default_factory=lambda: [0.5], description="more router thresholds for the curve")

    @model_validator(mode="before")
    @classmethod
    def _recipe(cls, data):
        if isinstance(data, dict) and data.get("recipe") == "r2r":
            return {**R2R_ROUTER, **{k: v for k, v in data.items() if v is not None}}
        return data
