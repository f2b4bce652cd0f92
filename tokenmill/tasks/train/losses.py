"""Token-weighted training losses (pure torch; the trainers call these).

Notation: for a sequence x (prompt ⊕ completion), ℓ_t = log π(x_t | x_<t), with per-token
weights w_t (0 on the prompt, padding and the first token of packed examples).

  weighted SFT        L = Σ_t w_t · (−ℓ_t) / Σ_t w_t                      (w ≡ loss mask: plain SFT)
  weighted DPO        L = −log σ(β · [Σ_t w^c_t (ℓ^θ_t − ℓ^ref_t)(chosen) − Σ_t w^r_t (ℓ^θ_t − ℓ^ref_t)(rejected)])
                      w ≡ completion mask: DPO (Rafailov et al. 2023);
                      rejected w_t = 1 − p_CE(y_t), chosen w ≡ 1: cDPO ("Critical Tokens Matter", Lin et al. 2024);
  TGDPO weights       w^c_t = 1 + α·β·r̂^c_t, w^r_t = 1 − α·β·r̂^l_t, with r̂ = log π_guide − log π_ref the
                      token rewards of a DPO model (`token_rewards` kind dpo, β = 1) and β the training
                      β, as the authors' trainer — TGDPO's token-reward-guided β_t = β·w_t
                      (Zhu et al. 2025, "Harnessing Token-Level Reward Guidance for DPO").
  TDPO                (Zeng et al. 2024, "Token-level Direct Preference Optimization"; as the authors'
                      code runs it, github.com/Vance0124/Token-level-Direct-Preference-Optimization
                      trainers.py `_tdpo_get_batch_logps` and `tdpo_loss`), with m_t the completion mask:
                      KL_t  = Σ_v π_ref(v | x_<t) · (log π_ref(v | x_<t) − log π_θ(v | x_<t))
                      D     = Σ_t m_t · KL_t                  (sequential KL, summed over the completion)
                      u     = Σ_t m^c_t (ℓ^θ_t − ℓ^ref_t)(chosen) − Σ_t m^r_t (ℓ^θ_t − ℓ^ref_t)(rejected)
                      TDPO1 L = −log σ(β · (u − (D^r − D^c)))
                      TDPO2 L = −log σ(β · (u − α · (D^r − sg(D^c))))   sg: stop-gradient (`.detach()`)
                      β multiplies the KL term too; TDPO1 has no α. Their config/loss/tdpo.yaml:
                      β = 0.1, α = 0.5, if_tdpo2: false (TDPO1; its README recommends TDPO2 for
                      higher learning rates, TDPO1 for low ones).
  RPO term            (dpo, tdpo) L + α · Σ_t m^c_t (−ℓ^θ_t) / Σ_t m^c_t: the mean NLL of the chosen
                      completions' tokens over the batch, m^c the chosen completion mask; α = 0 (the
                      default): plain (c)DPO. Pang et al. 2024, "Iterative Reasoning Preference
                      Optimization" (α = 1 on GSM8K: DPO alone lowered accuracy there); TRL runs it as
                      loss_type ["sigmoid", "sft"] with loss_weights [1, α] (its `sft` loss is this
                      token mean). cDPO's authors compute this NLL and leave it out of the loss.
  dynamic keep        (D³S's dynamic down-sampling schedule, Wang et al. 2025): at step s of S the
                      batch's q_s share of tokens with the highest weight get weight 1, the rest 0,
                      q_s = q_start + (q_end − q_start)·(s − 1)/(S − 1): aggressive first, then
                      relaxed. The authors' schedule is not public (no code); linear is
                      tokenmill's choice. With weights = D³S's |A|·H scores this is D³S's token
                      level re-selected per batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] log π(x_t | x_<t); position 0 (no context) is 0."""
    # gather − logsumexp, not log_softmax: no second [B, L, V] tensor is kept for backward
    x = logits[:, :-1].float()
    logp = x.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - x.logsumexp(-1)
    return F.pad(logp, (1, 0))


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] KL(π_ref ‖ π_θ) of the next-token distributions, aligned like `token_logprobs`:
    position t is the KL of the distributions that predict x_t (from logits at t − 1); position
    0 (no context) is 0. The reference side is computed without gradient.

    Memory: written as Σ_v p_ref·log p_ref − Σ_v p_ref·z + logsumexp(z) (z the policy's logits;
    Σ_v p_ref = 1): no log_softmax of the policy is materialised, and backward keeps one
    [B, L, V] tensor more than `token_logprobs` does (p_ref, without gradient)."""
    if policy_logits.shape != ref_logits.shape or policy_logits.shape[:2] != input_ids.shape:
        raise ValueError(f"token_kl: logits {tuple(policy_logits.shape)} / {tuple(ref_logits.shape)} "
                         f"do not fit input_ids {tuple(input_ids.shape)}")
    z = policy_logits[:, :-1].float()
    with torch.no_grad():
        ref_lp = ref_logits[:, :-1].float().log_softmax(-1)
        p_ref = ref_lp.exp()
        neg_entropy = (p_ref * ref_lp).sum(-1)
        del ref_lp
    kl = neg_entropy - (p_ref * z).sum(-1) + z.logsumexp(-1)  # float32 elementwise ops: no autocast downcast
    return F.pad(kl, (1, 0))


def keep_share(step: int, steps: int, start: float, end: float) -> float:
    """q_s of the dynamic keep schedule (module docstring), steps counted from 1."""
    return start + (end - start) * (step - 1) / max(steps - 1, 1)


def keep_top(weights: torch.Tensor, share: float) -> torch.Tensor:
    """0/1 weights: the ⌈share·N⌉ highest of the N positive weights are 1 (ties: the lower
    flat index, a stable sort), the rest 0."""
    flat = weights.float().flatten()
    n = int((flat > 0).sum())
    k = min(math.ceil(round(share * n, 9)), n)  # rounding first: 0.1 * 30 must not keep 4
    out = torch.zeros_like(flat)
    out[torch.argsort(flat, descending=True, stable=True)[:k]] = 1.0
    return out.view_as(weights)


def weighted_nll(logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """−Σ w·ℓ / Σ w over the batch from per-token log-probs [B, L] (`token_logprobs`); position 0
    (no prediction) never counts."""
    w = weights.float().clone()
    w[:, 0] = 0.0
    return -(logps * w).sum() / w.sum().clamp_min(1e-8)


def weighted_sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy, normalised by the total weight."""
    return weighted_nll(token_logprobs(logits, input_ids), weights)


def weighted_dpo_loss(policy_chosen: torch.Tensor, ref_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                      ref_rejected: torch.Tensor, w_chosen: torch.Tensor, w_rejected: torch.Tensor,
                      beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-pair margin) from per-token log-probs [B, L] of both sides under the
    policy and the reference, and per-token weights [B, L]."""
    margin = beta * (((policy_chosen - ref_chosen) * w_chosen).sum(-1) - ((policy_rejected - ref_rejected) * w_rejected).sum(-1))
    return -F.logsigmoid(margin).mean(), margin


def tgdpo_weights(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, mask_chosen: torch.Tensor,
                  mask_rejected: torch.Tensor, alpha: float = 0.5, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """TGDPO's token weights as dvlab-research/TGDPO's trainer runs them
    (`(self.beta * (1 + self.tgdpo_alpha * self.beta * reward_chosen_logratios) * chosen_logratios)`):
    1 + α·β·r̂ on chosen and 1 − α·β·r̂ on rejected tokens, r̂ = log π_guide − log π_ref (the
    `dpo` token rewards labelled with β = 1) and β the training β. Not clipped: a weight may
    go negative, as there."""
    return (1 + alpha * beta * reward_chosen) * mask_chosen, (1 - alpha * beta * reward_rejected) * mask_rejected


TDPO_VARIANTS = ("tdpo1", "tdpo2")


def tdpo_loss(policy_chosen: torch.Tensor, ref_chosen: torch.Tensor, policy_rejected: torch.Tensor,
              ref_rejected: torch.Tensor, kl_chosen: torch.Tensor, kl_rejected: torch.Tensor,
              mask_chosen: torch.Tensor, mask_rejected: torch.Tensor, beta: float = 0.1, alpha: float = 0.5,
              variant: str = "tdpo1") -> tuple[torch.Tensor, torch.Tensor]:
    """TDPO (module docstring): (mean loss, per-pair margin, the argument of log σ) from per-token
    log-probs [B, L] of both sides under the policy and the reference, per-token KL(π_ref ‖ π_θ)
    [B, L] (`token_kl`) and completion masks [B, L]. `variant` tdpo1 ignores α; tdpo2 stops the
    gradient through the chosen side's KL."""
    if variant not in TDPO_VARIANTS:
        raise ValueError(f"tdpo_loss: unknown variant {variant!r}; variants: {', '.join(TDPO_VARIANTS)}")
    u = ((policy_chosen - ref_chosen) * mask_chosen).sum(-1) - ((policy_rejected - ref_rejected) * mask_rejected).sum(-1)
    d_chosen, d_rejected = (kl_chosen * mask_chosen).sum(-1), (kl_rejected * mask_rejected).sum(-1)
    if variant == "tdpo1":
        logits = u - (d_rejected - d_chosen)
    else:
        logits = u - alpha * (d_rejected - d_chosen.detach())
    margin = beta * logits
    return -F.logsigmoid(margin).mean(), margin
