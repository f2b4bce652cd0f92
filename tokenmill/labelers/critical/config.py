"""Settings of the critical-token (cDPO) labeler and its truth check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tokenmill.common_config import Settings

from tokenmill.tasks.train.finetune_config import _LEGACY_TRAIN, ContrastTrainConfig

class CriticalConfig(Settings):
    beta: float = Field(1.0, ge=0, description="contrast strength β")
    top_k: int | None = Field(3, ge=1, description="mark this many lowest-p_CE tokens per rollout critical")
    threshold: float | None = Field(None, gt=0, lt=1, description="or: mark tokens with p_CE below this")
    include_correct: bool = Field(False, description="also label correct rollouts")
    per_source: bool = Field(True, description="one pair of contrast models per policy and source (world or file), "
                                               "as the authors train per dataset; false: one per policy, pooled")
    train: ContrastTrainConfig = Field(default_factory=ContrastTrainConfig,
                                       description="contrast-model training: settings, or a recipe name (cdpo, tiny)")
    seed: int = 0
    logits_memory_mb: float = Field(512.0, gt=0, description="most MiB of [tokens, vocab] float32 arrays one p_CE pass "
                                    "keeps alive (sets the tokens per LM-head call; results do not depend on it)")

    @field_validator("train", mode="before")
    @classmethod
    def _recipe_name(cls, v):
        return ContrastTrainConfig.named(v) if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _flat_train_fields(cls, data):
        """train_steps / train_lr / train_batch: the flat spellings, applied over `train`."""
        if not isinstance(data, dict) or not _LEGACY_TRAIN.keys() & data.keys():
            return data
        data = dict(data)
        train = data.get("train", "cdpo")
        train = ContrastTrainConfig.named(train) if isinstance(train, str) else train
        train = train.model_dump() if isinstance(train, BaseModel) else dict(train)
        for old, new in _LEGACY_TRAIN.items():
            if old in data and data[old] is not None:
                train[new] = data[old]
            data.pop(old, None)
        data["train"] = train
        return data



class TruthConfig(Settings):
    """Rollout ground truth of critical tokens (`labeler.critical_truth`)."""

    definition: Literal["paper", "replace-top1"] = Field(
        "paper", description="paper: the authors' first all-failing kept prefix; replace-top1: tokenmill's earlier "
                             "success gain from replacing the token by the policy's most likely other one")
    rollouts: int = Field(16, ge=1, description="incorrect rollouts to examine")
    k: int = Field(64, ge=1, description="continuations of each kept prefix (the authors' with_sampling_n = 64); "
                                         "replace-top1: per arm")
    alternatives: int = Field(64, ge=1, description="paper: alternative tokens drawn per position, each continued once "
                                                    "(the authors' 64 draws, without_sampling_n = 1)")
    recover: int = Field(3, ge=0, description="paper: a later prefix with more correct kept continuations than this "
                                              "restarts the search (the authors' > 3 of 64)")
    margin: float = Field(0.25, gt=0, le=1, description="replace-top1: truly critical when replaced − kept success ≥ margin")
    temperature: float = Field(1.0, gt=0, description="continuations' temperature (the authors set one per model "
                                                      "and dataset, 0.1–1.1)")
    max_tokens: int = Field(64, ge=1)
    seed: int = 0
