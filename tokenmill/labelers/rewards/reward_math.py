"""Formulas behind `tokenmill.labelers.rewards.labeler`: token-level rewards, advantages and
token-selection scores from the RL-for-LLMs literature. Every function is pure and
vectorised with numpy (no Python loop over tokens or rollouts). Token data are flat: all
tokens of all rollouts concatenated, rollout i owning `lengths[i]` consecutive entries;
`lengths` may contain zeros.
"""

from __future__ import annotations

import math

import numpy as np


STD_KINDS = ("sample", "population")


def _group_stats(rewards: np.ndarray, groups: np.ndarray, std: str = "sample"):
    """Per-rollout (group index, group mean, group std), in float64. `std`: "sample" is the
    unbiased std (ddof = 1, `torch.std`'s default: what TRL's GRPOTrainer and verl's
    `compute_grpo_outcome_advantage` divide by); "population" divides by G (ddof = 0). A
    group of one has std 0 either way (its advantage is 0: R − mean = 0)."""
    if std not in STD_KINDS:
        raise ValueError(f"std must be one of {STD_KINDS}")
    r = np.asarray(rewards, dtype=np.float64)
    inv = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if inv.shape != r.shape:
        raise ValueError("rewards and groups must be 1-D and of equal length")
    count = np.bincount(inv)
    mean = np.bincount(inv, weights=r) / count
    ss = np.bincount(inv, weights=(r - mean[inv]) ** 2)
    dof = np.maximum(count - (1 if std == "sample" else 0), 1)
    return inv, mean[inv], np.sqrt(ss / dof)[inv]


def dpo_token_rewards(logp_policy: np.ndarray, logp_ref: np.ndarray, beta: float = 0.1,
                      clip: float | None = None) -> np.ndarray:
    """Token-level implicit DPO reward r_t = β·(log π_dpo(y_t) − log π_ref(y_t)).

    Rafailov et al. 2024, "From r to Q*: Your Language Model is Secretly a Q-Function";
    used as a dense per-token reward by RTO (Zhong et al. 2024, "DPO Meets PPO: Reinforced
    Token Optimization") and, with β = 1, as r̂_t by TGDPO (Zhu et al. 2025). If `clip` = c
    is given, r_t is clipped to [−c, c]. Returns float32.
    """
    r = beta * (np.asarray(logp_policy, np.float64) - np.asarray(logp_ref, np.float64))
    if clip is not None:
        if clip < 0:
            raise ValueError("clip must be >= 0")
        r = np.clip(r, -clip, clip)
    return r.astype(np.float32)


def group_advantages(rewards: np.ndarray, groups: np.ndarray, eps: float = 1e-6,
                     normalize: bool = True, std: str = "sample") -> np.ndarray:
    """GRPO group-relative advantage A_i = (R_i − mean_g R) / (std_g R + ε).

    Shao et al. 2024, "DeepSeekMath" (GRPO), as verl's `compute_grpo_outcome_advantage` runs
    it: std_g is the unbiased std over the G rollouts of i's group,
    √(Σ_k (R_k − mean_g R)² / (G − 1)) (`torch.std`; TRL's GRPOTrainer too), ε = 1e-6.
    `std="population"` divides by G instead (tokenmill's earlier default, kept as a variant:
    its advantages are √(G/(G−1)) times these, 1.155× for G = 4). `groups` holds any label
    per rollout. `normalize=False` returns R_i − mean_g R (Dr. GRPO, Liu et al. 2025).
    A group of one rollout gets 0 (verl gives it its raw score, TRL NaN). Per rollout, float32.
    """
    _, mean, std = _group_stats(rewards, groups, std)
    adv = np.asarray(rewards, np.float64) - mean
    return (adv / (std + eps) if normalize else adv).astype(np.float32)


def broadcast(per_rollout: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Repeat each rollout's value over its tokens: flat[t] = per_rollout[i] for t in i."""
    return np.repeat(np.asarray(per_rollout), np.asarray(lengths, dtype=np.int64))


def tempo_advantages(token_ids: np.ndarray, lengths: np.ndarray, rewards: np.ndarray,
                     groups: np.ndarray, eps: float = 1e-6, normalize: bool = True,
                     std: str = "sample") -> np.ndarray:
    """TEMPO prefix-tree advantage per token (flat, float32).

    TEMPO ("Tree-Estimated Mean Prefix Value", Prefix-to-Tree, 2025). For rollout i at
    token j:  A_ij = (R_i − μ_g + V(ℬ) − V(𝒜)) / (σ_g + ε),  where
      𝒜 = rollouts of i's group whose first j tokens equal y_i[<j] and that have a token
          at position j (they reach tree node y_i[<j] and continue from it),
      ℬ = members of 𝒜 whose token j equals y_i[j] (they reach node y_i[≤j]),
      V(S) = mean raw reward R over S,
      μ_g, σ_g = mean and std of R over all rollouts of the group, zero-length rollouts
          included (they never enter 𝒜 or ℬ); σ_g unbiased (ddof = 1) as GRPO's in verl and
          TRL, or the population std with `std="population"`.
    At non-branching tokens ℬ = 𝒜, the TD term vanishes and A_ij is the GRPO advantage;
    at j = 0, 𝒜 is every group member with at least one token. `normalize=False` drops
    the division. Token ids must be >= 0 (−1 is the padding). The tree is built exactly
    (no hashing) by sorting the padded token rows.
    """
    g, mu, sigma = _group_stats(rewards, groups, std)
    if np.asarray(token_ids).size == 0:
        _check_tree_inputs(token_ids, lengths, g)
        return np.zeros(0, np.float32)
    order, valid, s_valid, rows, w, v_b, v_a, _ = _prefix_tree(token_ids, lengths, rewards, g)
    n_roll, width = valid.shape
    adv = w - mu[order][rows] + v_b - v_a
    if normalize:
        adv = adv / (sigma[order][rows] + eps)
    sorted_adv = np.zeros((n_roll, width))
    sorted_adv[s_valid] = adv
    out = np.empty_like(sorted_adv)
    out[order] = sorted_adv
    return out[valid].astype(np.float32)


def _check_tree_inputs(token_ids, lengths, g) -> tuple[np.ndarray, np.ndarray]:
    tok = np.asarray(token_ids, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if tok.ndim != 1 or lengths.ndim != 1 or lengths.sum() != tok.size or (lengths < 0).any():
        raise ValueError("token_ids must be flat with sum(lengths) entries")
    if tok.size and tok.min() < 0:
        raise ValueError("token ids must be >= 0")
    if g.size != lengths.size:
        raise ValueError("rewards, groups and lengths must have one entry per rollout")
    return tok, lengths


def _prefix_tree(token_ids, lengths, rewards, g):
    """The exact prefix tree of each group's rollouts (sorted padded rows; no hashing).
    Returns the sort order, the padded-validity masks (original and sorted), the sorted
    row of every token, its rollout's reward, and per token (sorted) V(ℬ) (mean reward of
    the rollouts through its node), V(𝒜) (through its parent) and |ℬ|."""
    tok, lengths = _check_tree_inputs(token_ids, lengths, g)
    n_roll, width = lengths.size, int(lengths.max())
    valid = np.arange(width) < lengths[:, None]
    mat = np.full((n_roll, width), -1, dtype=np.int64)
    mat[valid] = tok  # row-major fill matches the flat layout

    # Sorting by (group, row) makes every tree node a contiguous block of rows in a column.
    order = np.lexsort(np.vstack([mat.T[::-1], g[None]]))
    s_mat, s_valid, s_g = mat[order], valid[order], g[order]
    s_r = np.asarray(rewards, np.float64)[order]

    eq = (s_mat[1:] == s_mat[:-1]) & s_valid[1:] & s_valid[:-1]
    lcp = np.cumprod(eq, axis=1).sum(axis=1)
    lcp[s_g[1:] != s_g[:-1]] = 0
    start = np.ones((n_roll, width), dtype=bool)
    start[1:] = np.arange(width) >= lcp[:, None]
    start &= s_valid
    # Column-major numbering gives every (depth, node) pair its own id.
    node = np.cumsum(start.T.ravel()).reshape(width, n_roll).T - 1

    n_node = int(start.sum())
    rows = np.broadcast_to(np.arange(n_roll)[:, None], (n_roll, width))[s_valid]
    w, ids = s_r[rows], node[s_valid]
    n_b = np.bincount(ids)[ids]
    v_b = np.bincount(ids, weights=w)[ids] / n_b

    # 𝒜 at column j gathers the column-j cells under the same column-(j−1) node; column-0
    # cells are keyed by group, offset past the node ids so that keys never collide.
    parent = np.empty_like(node)
    parent[:, 0] = n_node + s_g
    parent[:, 1:] = node[:, :-1]
    pk = parent[s_valid]
    v_a = np.bincount(pk, weights=w)[pk] / np.bincount(pk)[pk]

    return order, valid, s_valid, rows, w, v_b, v_a, n_b


def prefix_values(token_ids: np.ndarray, lengths: np.ndarray, rewards: np.ndarray, groups: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per token (flat): V(y_i[≤j]), the mean reward of the group's rollouts whose first
    j+1 tokens equal rollout i's, and how many rollouts that is. With 0/1 correctness as the
    reward this is the empirical probability of a correct answer given the prefix — the
    Token-Supervised Value Model target (Lee et al. 2024). Float64 values, int64 counts."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if np.asarray(token_ids).size == 0:
        _check_tree_inputs(token_ids, lengths, g)
        return np.zeros(0), np.zeros(0, np.int64)
    order, valid, s_valid, _, _, v_b, _, n_b = _prefix_tree(token_ids, lengths, rewards, g)

    def unsort(values, dtype):
        out = np.zeros(valid.shape, dtype)
        out[s_valid] = values
        back = np.empty_like(out)
        back[order] = out
        return back[valid]

    return unsort(v_b, np.float64), unsort(n_b, np.int64)


def d3s_scores(advantages: np.ndarray, entropy: np.ndarray,
               keep_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """D³S token-level down-sampling score and keep mask.

    "Dynamic Dual-Level Down-Sampling" (D³S, 2025), token level: score_t = |A_t|·H_t, and the
    ⌈keep_frac·N⌉ highest-scoring tokens of the batch are kept; ties go to the lower flat
    index, except that a zero score is never kept (a token with no advantage or no entropy
    carries no gradient signal: filling the quota with them would be arbitrary). keep_frac
    must lie in (0, 1]. Returns (score float32, keep bool). D³S's sample-level selection and
    its dynamic keep schedule are not implemented.
    """
    if not 0.0 < keep_frac <= 1.0:
        raise ValueError("keep_frac must be in (0, 1]")
    score = np.abs(np.asarray(advantages, np.float64)) * np.asarray(entropy, np.float64)
    # Rounding first stops float noise (0.1 * 30 = 3.0000000000000004) adding a token.
    k = math.ceil(round(keep_frac * score.size, 9))
    keep = np.zeros(score.size, dtype=bool)
    keep[np.argsort(-score, kind="stable")[:k]] = True
    keep &= score > 0
    return score.astype(np.float32), keep


def window_entropy(entropy: np.ndarray, lengths: np.ndarray, window: int = 1,
                   threshold: float | None = None,
                   quantile: float = 0.8) -> tuple[np.ndarray, np.ndarray, float]:
    """Token entropy (optionally window-smoothed) and a high-entropy flag.

    High-entropy "forking tokens" (Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy
    Minority Tokens Drive Effective RL for LLM Reasoning"). The paper keeps the top 20 % of a
    batch's tokens by their own entropy: window = 1 (the default) and quantile 0.8. A window
    w > 1 is tokenmill's smoothed variant:
      m_t = mean(H_{max(s_i, t−w+1) .. t}),  s_i = first flat index of t's rollout,
    so windows never cross rollouts and a rollout's first tokens average fewer values.
    flag_t = m_t ≥ τ, τ = `threshold` if given, else the `quantile` quantile (np.quantile,
    linear) of all m_t in the batch. Returns (m float32, flag bool, τ float).
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    h = np.asarray(entropy, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != h.size:
        raise ValueError("entropy must be flat with sum(lengths) entries")
    csum = np.concatenate([[0.0], np.cumsum(h)])
    t = np.arange(h.size)
    lo = np.maximum(np.repeat(np.cumsum(lengths) - lengths, lengths), t - window + 1)
    m = (csum[t + 1] - csum[lo]) / (t + 1 - lo)
    if threshold is not None:
        tau = float(threshold)
    else:
        tau = float(np.quantile(m, quantile)) if m.size else float("nan")
    return m.astype(np.float32), m >= tau, tau


def rlpr_rewards(ref_logprobs: np.ndarray, ref_lengths: np.ndarray) -> np.ndarray:
    """RLPR probability reward r = (1/|y*|) Σ_i p(y*_i | x, z, y*_<i).

    Yu et al. 2025, "RLPR: Extrapolating RLVR to General Domains without Verifiers": the mean
    probability (exp of the log-prob, not the log-prob itself) of the reference answer's
    tokens given the prompt x and the rollout's reasoning z. Flat `ref_logprobs`, one
    length per rollout; a zero-length reference gives NaN. Returns float32.
    """
    lengths = np.asarray(ref_lengths, dtype=np.int64)
    p = np.exp(np.asarray(ref_logprobs, dtype=np.float64))
    if lengths.sum() != p.size:
        raise ValueError("ref_logprobs must be flat with sum(ref_lengths) entries")
    owner = np.repeat(np.arange(lengths.size), lengths)
    total = np.bincount(owner, weights=p, minlength=lengths.size)
    out = np.full(lengths.size, np.nan)
    np.divide(total, lengths, out=out, where=lengths > 0)
    return out.astype(np.float32)


def rlpr_debiased(with_reasoning: np.ndarray, without_reasoning: np.ndarray) -> np.ndarray:
    """RLPR's reward as its code runs it (OpenBMB/RLPR, `reward_manager/prob.py`, shaping
    `threshold_0`): r = max(p_r − p_0, 0), p_r = `rlpr_rewards` after the rollout's reasoning
    (scoreB), p_0 = the same mean probability of the reference right after the prompt, with no
    reasoning (scoreA). Subtracting p_0 removes what the reference's own likelihood gives
    every rollout of the prompt alike. NaN stays NaN. Returns float32."""
    d = np.asarray(with_reasoning, np.float64) - np.asarray(without_reasoning, np.float64)
    return np.where(np.isnan(d), np.nan, np.maximum(d, 0.0)).astype(np.float32)

