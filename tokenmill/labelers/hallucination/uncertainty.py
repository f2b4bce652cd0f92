"""Uncertainty of entity spans from the generating model's own token statistics.

For a span covering tokens j = s…e with probabilities p_j = exp(logprob_j):

  min_prob      min_j p_j
  mean_prob     (1/n) Σ_j p_j
  mean_entropy  (1/n) Σ_j H_j                        (null where the engine gave no entropy)
  ccp           Claim-Conditioned Probability (Fadeeva et al. 2024, "Fact-Checking the Output
                of Large Language Models via Token-Level Uncertainty Quantification"):
                  CCP_word(y_j) = Σ_{k: J(y_j^k, y_j) = entail} P(y_j^k)
                                  / Σ_{k: J(y_j^k, y_j) ∈ {entail, contradict}} P(y_j^k)
                over the top-k alternatives y_j^k at step j (the chosen token included),
                  CCP_claim = Π_{j ∈ span} CCP_word(y_j),
                with J a pluggable equivalence judge (default: normalised surface
                equality — same text after strip + casefold is "entail", else
                "contradict"; an NLI model can return "neutral" to leave a pair out);
  consistency   SelfCheck-style agreement: among the *other* samples of the same prompt
                and model, the share that state a span of the same entity type with the
                same normalised text (null when the prompt has one sample).

All vectorised: segment reductions over the concatenated token arrays (`reduceat` /
`cumsum`), the judge as one [N, k] comparison, consistency as two Arrow group-bys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

import numpy as np
import pyarrow as pa

ENTAIL, NEUTRAL, CONTRADICT = 1, 0, -1


class EquivalenceJudge(ABC):
    name: str = ""

    @abstractmethod
    def relation(self, chosen: np.ndarray, alternatives: np.ndarray, tokenizer) -> np.ndarray:
        """[N, k] int8 in {ENTAIL, NEUTRAL, CONTRADICT}: alternative k of token n vs the chosen token n."""


@lru_cache(maxsize=8)
def _surface_codes(tokenizer) -> np.ndarray:
    texts = [t.strip().casefold() for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]  # once per vocab
    return np.unique(np.array(texts, dtype=object), return_inverse=True)[1]


class SurfaceJudge(EquivalenceJudge):
    name = "surface"

    def relation(self, chosen, alternatives, tokenizer):
        codes = _surface_codes(tokenizer)
        return np.where(codes[alternatives] == codes[chosen][:, None], ENTAIL, CONTRADICT).astype(np.int8)


JUDGES = {"surface": SurfaceJudge}


def ccp_word(chosen: np.ndarray, chosen_logprob: np.ndarray, top_ids: np.ndarray, top_logprobs: np.ndarray,
             relation: np.ndarray) -> np.ndarray:
    """CCP of each chosen token from its top-k alternatives and their relation to it; the
    chosen token counts once, with its own probability, whether or not it is in the top-k."""
    p = np.exp(top_logprobs.astype(np.float64))
    is_chosen = top_ids == chosen[:, None]
    outside = ~is_chosen.any(1)  # chosen token sampled from outside the top-k
    rel = np.where(is_chosen, ENTAIL, relation)
    num = (p * (rel == ENTAIL)).sum(1) + np.where(outside, np.exp(chosen_logprob), 0.0)
    den = (p * (rel != NEUTRAL)).sum(1) + np.where(outside, np.exp(chosen_logprob), 0.0)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)


def segment_stats(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(min, mean, sum) of values[first_i … last_i] (inclusive) per segment; segments may
    overlap. Empty segments, and segments holding a NaN (a missing value), give NaN; the
    others are unaffected by NaNs elsewhere."""
    v = np.asarray(values, np.float64)
    ok = last >= first
    lo, hi = np.where(ok, first, 0), np.where(ok, last + 1, 1)
    csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(v))])
    missing = np.concatenate([[0], np.cumsum(np.isnan(v))])
    ok = ok & (missing[hi] - missing[lo] == 0)
    total = csum[hi] - csum[lo]
    n = hi - lo
    padded = np.append(v, np.nan)  # reduceat needs an index past the end for the last segment
    idx = np.empty(2 * len(lo), np.int64)
    idx[0::2], idx[1::2] = lo, hi
    mins = np.minimum.reduceat(padded, idx)[0::2] if len(lo) else np.zeros(0)
    nan = np.full(len(lo), np.nan)
    return np.where(ok, mins, nan), np.where(ok, total / np.maximum(n, 1), nan), np.where(ok, total, nan)


def consistency(span_rollout: np.ndarray, group: np.ndarray, entity_type: np.ndarray, text: np.ndarray,
                group_sizes: dict) -> np.ndarray:
    """Share of the other samples of each span's group (prompt × model) that state a span of
    the same type and normalised text; NaN for groups of one sample."""
    if len(text) == 0:  # Arrow would type the empty columns `null`, which no join takes
        return np.zeros(0)
    norm = np.array([str(t).strip().casefold() for t in text], dtype=object)  # per span
    t = pa.table({"rollout": span_rollout, "group": group, "type": entity_type, "norm": norm,
                  "i": np.arange(len(norm))})
    agree = t.group_by(["group", "type", "norm"]).aggregate([("rollout", "count_distinct")])
    joined = t.join(agree, ["group", "type", "norm"]).sort_by("i")  # a join reorders rows
    same = joined.column("rollout_count_distinct").to_numpy().astype(np.float64)
    sizes = np.array([group_sizes[g] for g in group], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 1, (same - 1) / (sizes - 1), np.nan)
