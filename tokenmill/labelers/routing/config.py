"""Settings of the R2R routing labeler."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import Settings

class RoutingConfig(Settings):
    """R2R routing labels of a large model's trajectories against a small model."""

    small: str = Field("tiny-small", description="the small model; rollouts of every other model are labelled")
    verifier: Literal["outcome", "judge"] = Field("outcome", description="outcome: continue to the end and compare "
                                                   "rewards (exact-answer worlds); judge: a model compares two sentences")
    judge_model: str | None = Field(None, description="judge verifier's model (default: the large model)")
    judge_template: str | None = Field(None, description="judge prompt with {context}, {reference}, {candidate} "
                                                          "(default: R2R's prompt)")
    judge_tokens: int = Field(24, ge=1, description="judge: tokens of its reply")
    unparsable: Literal["drop", "divergent", "neutral"] = Field(
        "drop", description="a judge reply without 0/1, or an outcome the verifier cannot decide (both wrong): drop "
                            "(undecidable, left out of router training, as R2R filters them); divergent / neutral: "
                            "tokenmill variants")
    sentences: int = Field(2, ge=1, description="continuations stop after this many sentence ends (R2R: 2)")
    continuation_tokens: int = Field(48, ge=1, description="judge: most tokens of a continuation")
    outcome_tokens: int = Field(128, ge=1, description="outcome: most tokens to continue to the end")
    top_k: int = Field(100, ge=1, description="router features: top-k logits of the small model")
    features: bool = Field(True, description="also store the small model's router features (`router_features`, what "
                                             "`train-router` reads); off: the labels alone, e.g. to weight training "
                                             "tokens (each token's state and top-k logits not written)")
