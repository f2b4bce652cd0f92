"""How a causal LM is fine-tuned into cDPO's contrast models (`finetune.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import Settings

class ContrastTrainConfig(Settings):
    """How cDPO's positive / negative contrast models are fine-tuned from the policy. The
    defaults are the cDPO authors' recipe (recipe `cdpo`; what they run and where tokenmill
    differs: labelers/critical/labeler.py); recipe `tiny` is the full fine-tune tuned for the
    bundled tiny models (`ContrastTrainConfig.named("tiny")`)."""

    method: Literal["lora", "full"] = Field("lora", description="lora: adapters on `lora_targets`, merged into the "
                                            "weights after training; full: every weight trained")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(1, ge=1, description="passes over the training rollouts (when `steps` is unset)")
    steps: int | None = Field(None, ge=1, description="optimizer steps; overrides `epochs`")
    batch: int = Field(6, ge=1, description="sequences per optimizer step")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up from 0 (steps)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning rate after warm-up")
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling = lora_alpha / lora_r")
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_targets: list[str] = Field(["gate_proj", "up_proj", "down_proj"], description="names of the Linear modules "
                                    "that get adapters")
    data: Literal["cdpo", "all"] = Field("cdpo", description="cdpo: per prompt, one correct rollout (pos) and one "
                                         "rollout per incorrect answer until half the prompt's incorrect rollouts "
                                         "are covered (neg); all: every correct / incorrect rollout")
    save_dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="dtype of the saved (merged) weights")
    val_examples: int = Field(300, ge=0, description="the last this many training sequences held out (the authors' "
                                                     "num_val = 300), at most a tenth of them; 0: none")
    eval_steps: int = Field(200, ge=1, description="held-out loss every this many steps; the step of lowest loss is "
                                                   "kept (the authors' eval/save_steps 200, load_best_model_at_end)")

    @classmethod
    def named(cls, recipe: str, **overrides) -> "ContrastTrainConfig":
        if recipe not in CONTRAST_RECIPES:
            from tokenmill.errors import TokenmillError

            raise TokenmillError(f"unknown contrast-model recipe {recipe!r}", fix=f"use one of {', '.join(CONTRAST_RECIPES)}")
        return cls(**{**CONTRAST_RECIPES[recipe], **overrides})


CONTRAST_RECIPES: dict[str, dict] = {
    "cdpo": {},  # the defaults above
    # what the bundled 1k-vocabulary models learn from in a few seconds on CPU (tokenmill's
    # settings before the authors' recipe became the default)
    "tiny": {"method": "full", "lr": 5e-4, "steps": 150, "batch": 16, "warmup_steps": 0, "schedule": "constant",
             "data": "all", "save_dtype": "float32", "val_examples": 0},
}
_LEGACY_TRAIN = {"train_steps": "steps", "train_lr": "lr", "train_batch": "batch"}
