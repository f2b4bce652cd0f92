"""Settings of the token-rewards labeler."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import Settings

REWARD_KINDS = ("dpo", "grpo", "tempo", "d3s", "entropy", "rlpr", "rlpr_raw")


class RewardsConfig(Settings):
    kinds: list[str] = list(REWARD_KINDS)
    beta: float = Field(0.1, gt=0, description="dpo: β")
    clip: float | None = Field(None, gt=0, description="dpo: clip rewards to ±clip")
    dpo_role: str = Field("policy", description="dpo: the role scored as π_dpo")
    ref_role: str = Field("ref", description="dpo: the role scored as π_ref")
    eps: float = 1e-6
    normalize: bool = Field(True, description="grpo/tempo: divide by the group's std")
    std: Literal["sample", "population"] = Field(
        "sample", description="grpo/tempo: the group std divided by: sample (unbiased, ddof 1: TRL's and verl's GRPO) "
                              "or population (ddof 0, tokenmill's earlier default)")
    keep_frac: float = Field(0.2, gt=0, le=1, description="d3s: share of the shard's tokens kept")
    d3s_advantage: str = Field("grpo", description="d3s: grpo or tempo advantages")
    window: int = Field(1, ge=1, description="entropy: 1 flags tokens by their own entropy (the 80/20 paper's rule: "
                                             "the top 20 %); > 1 by a trailing window mean (tokenmill's smoothed variant)")
    threshold: float | None = Field(None, description="entropy: high-window threshold τ (default: a quantile)")
    quantile: float = Field(0.8, gt=0, lt=1, description="entropy: τ as this quantile of the shard's window means")
