"""Evaluation helpers the trainers share: prompt-level splits and ROC AUC."""

from __future__ import annotations

import numpy as np

from tokenmill import ids


def split_hash(prompts: list[str], seed: int) -> list[float]:
    """u(p) ∈ [0, 1] per prompt: a seeded content hash, the same on every machine."""
    return [int(ids.content_id(str(seed), p)[:8], 16) / 0xFFFFFFFF for p in prompts]


def split_by_prompt(prompt_ids: list[str], val_frac: float, seed: int) -> np.ndarray:
    """[N] bool, True = validation: whole prompts, those with u(p) < val_frac."""
    uniq = sorted(set(prompt_ids))
    val = {p for p, u in zip(uniq, split_hash(uniq, seed)) if u < val_frac}
    return np.array([p in val for p in prompt_ids], dtype=bool)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties
    counting one half (Mann–Whitney U with average ranks). NaN scores are dropped; NaN
    when a class is missing."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    # average rank of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based ranks starts+1 … ends, averaged
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_or_none(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """`roc_auc`, or None where it is undefined (a class missing, or no score at all): what
    lake tables and JSON records store as null, never NaN."""
    auc = roc_auc(scores, labels)
    return None if np.isnan(auc) else auc
