"""Settings of the Token-Supervised Value Model target labeler."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import Settings


class TvmConfig(Settings):
    """What a prefix's value is the mean of, over the rollouts of its prompt and model that
    share it. TVM's own target is correctness (`correct`: 1 for a correct final answer, else
    0); `reward` is a tokenmill variant that averages the verifier's reward instead
    (partial credit, e.g. the countries world's share of supported claims)."""

    target: Literal["correct", "reward"] = Field("correct", description="correct: TVM's 0/1 correctness; "
                                                 "reward: the verifier's reward (tokenmill variant)")
