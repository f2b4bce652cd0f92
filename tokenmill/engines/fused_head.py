"""The LM head's scoring statistics, fused and chunked over the vocabulary.

`token_stats` (engines/base.py) needs the logits of a row over the whole vocabulary at once:
[rows, V] float32, ~600 KiB a row for a 151,936-token vocabulary. Here the head runs one
vocabulary chunk of `vocab_chunk` columns at a time, and each row keeps running statistics
(the idea of Liger-Kernel's fused linear cross-entropy, Hsu et al. 2024, applied to
scoring), so memory is [rows, vocab_chunk] whatever V is.

For a row with hidden state h and head W (bias b), chunk c holds z_c = W_c·h + b_c (the
matrix product in the weights' dtype, then float32, as `token_stats(head(h).float())`).
With m the running maximum of z over the chunks seen, the row keeps

    s = Σ_v e^(z_v − m)              t = Σ_v e^(z_v − m) · (z_v − m)

and a new chunk with maximum m' ≥ m rescales them by e^(m − m'):
    s ← e^(m − m')·s,   t ← e^(m − m')·(t + (m − m')·s)   (before adding the chunk's terms).
At the end, with log Z = m + log s:

    log p(y)  = z_y − log Z                       (the target's raw logprob)
    H         = −Σ_v p_v log p_v = log s − t / s   (exact entropy: p_v = e^(z_v − m) / s)
    top-k     = the k largest z over the chunks' own top-k, minus log Z

t is kept relative to m, so H is a difference of two O(1) terms and not log Z − E_p[z]
(both can be large). Logits of −inf (masked vocabulary) add 0 to s and t, as 0·log 0 = 0 in
`token_stats`. The result equals `token_stats` up to float32 rounding (tests/engines/
test_fused_head.py); top-k ties may come in another order, as they may in torch.topk.
"""

from __future__ import annotations

import torch

VOCAB_CHUNK = 8192  # vocabulary columns per chunk: [rows, 8192] float32 = 32 KiB a row


def fused_head_stats(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                     top_k: int, entropy: bool = True, vocab_chunk: int = VOCAB_CHUNK):
    """(target logprob [n], entropy [n] or None, top-k ids [n, k] int32, top-k logprobs [n, k])
    of the head `weight` [V, d] (+ `bias`) at states `h` [n, d], chunk by chunk over the
    vocabulary (module docstring): the same as `token_stats(h @ weight.T + bias, targets, top_k,
    entropy)` without its [n, V] arrays."""
    n, vocab = h.shape[0], weight.shape[0]
    dev = h.device
    k = min(top_k, vocab)
    m = torch.full((n,), float("-inf"), device=dev)
    s = torch.zeros(n, device=dev)
    t = torch.zeros(n, device=dev)
    target_z = torch.full((n,), float("-inf"), device=dev)
    top_v = torch.empty(n, 0, device=dev)
    top_i = torch.empty(n, 0, dtype=torch.long, device=dev)
    targets = targets.long()
    rows = torch.arange(n, device=dev)
    for c0 in range(0, vocab, vocab_chunk):
        c1 = min(c0 + vocab_chunk, vocab)
        z = (h @ weight[c0:c1].t()).float()
        if bias is not None:
            z += bias[c0:c1].float()
        inside = (targets >= c0) & (targets < c1)
        target_z = torch.where(inside, z[rows, (targets - c0).clamp(0, c1 - c0 - 1)], target_z)
        m_new = torch.maximum(m, z.amax(-1))
        shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))  # a row all −inf so far: no shift
        scale = torch.exp(m - shift)  # 0 while m is −inf
        if entropy:
            t = scale * (t + torch.where(s > 0, (m - shift) * s, 0.0))
        d = z - shift[:, None]
        e = torch.exp(d)
        s = scale * s + e.sum(-1)
        if entropy:
            t = t + torch.where(e > 0, e * d, 0.0).sum(-1)
        m = m_new
        if k:
            cv, ci = z.topk(min(k, c1 - c0), dim=-1)
            top_v, j = torch.cat([top_v, cv], 1).topk(min(k, top_v.shape[1] + cv.shape[1]), dim=-1)
            top_i = torch.cat([top_i, ci + c0], 1).gather(1, j)
    log_s = torch.log(s)
    log_z = m + log_s
    ent = (log_s - t / s) if entropy else None
    return target_z - log_z, ent, top_i.int(), top_v - log_z[:, None]
