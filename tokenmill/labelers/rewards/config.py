"""Settings of the token-rewards labeler."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import Settings

REWARD_KINDS = ("dpo", "grpo", "tempo", "d3s", "entropy", "rlpr")


class RewardsConfig(Settings):
    kinds: list[str] = list(REWARD_KINDS)
    beta: float = Field(0.1, gt=0, description="dpo: β")
    clip: float | None = Field(None, gt=0, description="dpo: clip rewards to ±clip")
    dpo_role: str = Field("policy", description="dpo: the role scored as π_dpo")
    ref_role: str = Field("ref", description="dpo: the role scored as π_ref")
    eps: float = 1e-6
    normalize: bool = Field(True, description="grpo/tempo: divide by the group's std")
    keep_frac: float = Field(0.2, gt=0, le=1, description="d3s: share of the shard's tokens kept")
    d3s_advantage: str = Field("grpo", description="d3s: grpo or tempo advantages")
    window: int = Field(5, ge=1, description="entropy: sliding window (tokens)")
    threshold: float | None = Field(None, description="entropy: high-window threshold τ (default: a quantile)")
    quantile: float = Field(0.8, gt=0, lt=1, description="entropy: τ as this quantile of the shard's window means")
