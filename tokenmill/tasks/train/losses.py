"""Token-weighted training losses (pure torch; the trainers call these).

Notation: for a sequence x (prompt ⊕ completion), ℓ_t = log π(x_t | x_<t), with per-token
weights w_t (0 on the prompt, padding and the first token of packed examples).

  weighted SFT        L = Σ_t w_t · (−ℓ_t) / Σ_t w_t                      (w ≡ loss mask: plain SFT)
  weighted DPO        L = −log σ(β · [Σ_t w^c_t (ℓ^θ_t − ℓ^ref_t)(chosen) − Σ_t w^r_t (ℓ^θ_t − ℓ^ref_t)(rejected)])
                      w ≡ completion mask: DPO (Rafailov et al. 2023);
                      rejected w_t = 1 − p_CE(y_t), chosen w ≡ 1: cDPO ("Critical Tokens Matter", Lin et al. 2024);
  TGDPO weights       w^c_t = 1 + α·r̂^c_t, w^r_t = 1 − α·r̂^l_t, with r̂ the token rewards of a DPO
                      model (`token_rewards` kind dpo) — TGDPO's token-reward-guided β_t = β·w_t
                      (Zhu et al. 2025, "Harnessing Token-Level Reward Guidance for DPO").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] log π(x_t | x_<t); position 0 (no context) is 0."""
    # gather − logsumexp, not log_softmax: no second [B, L, V] tensor is kept for backward
    x = logits[:, :-1].float()
    logp = x.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - x.logsumexp(-1)
    return F.pad(logp, (1, 0))


def weighted_sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy, normalised by the total weight."""
    w = weights.float().clone()
    w[:, 0] = 0.0
    return -(token_logprobs(logits, input_ids) * w).sum() / w.sum().clamp_min(1e-8)


def weighted_dpo_loss(policy_chosen: torch.Tensor, ref_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                      ref_rejected: torch.Tensor, w_chosen: torch.Tensor, w_rejected: torch.Tensor,
                      beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-pair margin) from per-token log-probs [B, L] of both sides under the
    policy and the reference, and per-token weights [B, L]."""
    margin = beta * (((policy_chosen - ref_chosen) * w_chosen).sum(-1) - ((policy_rejected - ref_rejected) * w_rejected).sum(-1))
    return -F.logsigmoid(margin).mean(), margin


def tgdpo_weights(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, mask_chosen: torch.Tensor,
                  mask_rejected: torch.Tensor, alpha: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """TGDPO's token weights from token rewards: (1 + α r̂) on chosen, (1 − α r̂) on rejected tokens."""
    return (1 + alpha * reward_chosen) * mask_chosen, (1 - alpha * reward_rejected) * mask_rejected
