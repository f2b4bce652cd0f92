"""The hallucination probe's targets and loss, shared by the linear probe (`probe.py`) and
the LoRA probe (`probe_lora.py`); the formulas are written out in `probe.py`'s docstring."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_LOGIT = 100.0  # upstream clamps probe logits to ±100 before either BCE (probe/loss.py)


def token_targets(label: np.ndarray, in_span: np.ndarray, outside: str, weighting: str,
                  span_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights) of every token: 1 / 0 inside not-supported / supported spans, −100
    inside unverifiable ones; outside every span 0 (`outside="negative"`) or −100 (`ignore`).
    Weights: `span_weight` on span tokens with a target, 1 elsewhere (`weighting="span"`), all
    1 otherwise (the balanced positive weight is set by the trainer)."""
    y = label.astype(np.float32).copy()
    if outside == "negative":
        y[~in_span] = 0.0
    w = np.where(in_span & (y != -100), span_weight, 1.0) if weighting == "span" else np.ones(len(y))
    return y, w.astype(np.float32)


def span_index(first: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token index, span index) of every token of every span."""
    span = np.repeat(np.arange(len(first)), length)
    tok = np.repeat(first, length) + np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return tok, span


def span_max(logits: torch.Tensor, tok: torch.Tensor, span: torch.Tensor, n_spans: int) -> torch.Tensor:
    """max_{t ∈ S} logits_t for each span S (segments given as token/span index pairs)."""
    out = torch.full((n_spans,), -torch.inf, dtype=logits.dtype, device=logits.device)
    return out.scatter_reduce(0, span, logits[tok], reduce="amax", include_self=True)


def probe_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, tok_i: torch.Tensor,
               span_i: torch.Tensor, span_y: torch.Tensor, lam: float) -> torch.Tensor:
    """(1 − λ)·L_token + λ·L_span: the token BCE over the tokens `keep` selects (weighted
    `weight`), the span term over the spans, whose token indices point into `logits`. A part
    with nothing in it counts 0, as upstream's trainer has it for a batch without labelled
    tokens or spans."""
    z = logits.clamp(-MAX_LOGIT, MAX_LOGIT)
    zero = z.new_zeros(())
    l_tok = F.binary_cross_entropy_with_logits(z[keep], y[keep], weight=weight[keep]) if bool(keep.any()) else zero
    l_span = (F.binary_cross_entropy_with_logits(span_max(z, tok_i, span_i, len(span_y)), span_y)
              if len(span_y) else zero)
    return (1 - lam) * l_tok + lam * l_span
