"""Prompt and sample selection that curation recipes apply before they weight tokens.

Both read one scalar per rollout: a sequence-level `token_rewards` kind (every token of a
rollout carries the same value; `max(value)` reads it), grouped by (prompt, model) as GRPO
groups rollouts.

RLPR's std filter (Yu et al. 2025, "RLPR: Extrapolating RLVR to General Domains without
Verifiers"; OpenBMB/RLPR `verl/trainer/ppo/ray_trainer.py`, `filter_mode=EMA`,
`filter_target=final_reward_std`): a prompt is kept when the std of its rollouts' rewards
reaches β times an exponential moving average of the mean std:

  σ_g      = torch.std of group g's rewards (unbiased; a group of one has σ = 1, as
             `get_reward_mean_and_std` gives it)
  m_k      = mean of σ_g over the k-th batch of `batch` prompts (prompts in prompt-id order)
  EMA_1    = m_1;  EMA_k = ρ · EMA_{k−1} + (1 − ρ) · m_k
  keep g in batch k  ⇔  σ_g ≥ β · EMA_k

with the authors' ρ = 0.99 (`filter_ema_ratio`) and β = 0.5 (`std_filter_beta` of their
Qwen recipe; 0.9 Llama, 1.0 Gemma). Offline there is no earlier training step, so batch k's
threshold includes batch k's own stds (online, a step's threshold uses the steps before it),
and the warm-up steps before filtering starts (`filter_start_step`) do not apply.

D³S sample level (Wang et al. 2025, "Learning More with Less: A Dynamic Dual-Level
Down-Sampling Framework"): of each group's n rollouts keep the m whose advantages have the
largest variance. The exact solution is PODS's max-variance down-sampling (Xu et al. 2025,
"Not All Rollouts are Useful"): with the values sorted, the best subset is the i largest and
the m − i smallest for some i, so trying every i on prefix sums costs O(n log n). Ties go to
the lower index after a stable sort. D³S's authors have not published their code; this is
the selection as the paper and PODS state it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import Lake

# weighted-sft's optional parameters read here (absent from a dataset's parameters unless given)
SELECTION_PARAMS = ("std_filter_beta", "std_filter_kind", "std_filter_ema", "std_filter_batch", "select_m", "select_by")

SCALARS = """
SELECT t.rollout_id, any_value(r.prompt_id) AS prompt_id, any_value(r.model) AS model, max(t.value) AS value
FROM token_rewards t JOIN rollouts r ON r.run_id = t.run_id AND r.rollout_id = t.rollout_id
WHERE t.run_id = $run AND t.kind = $kind AND t.config_id = $config
GROUP BY t.rollout_id ORDER BY prompt_id, model, t.rollout_id
"""


def group_std(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per group (ids 0..G−1), the unbiased std of its values; 1 for a group of one (RLPR's
    `get_reward_mean_and_std`)."""
    n = np.bincount(groups)
    s1, s2 = np.bincount(groups, values), np.bincount(groups, values * values)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / n) / (n - 1)
    return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), 1.0)


def ema_std_keep(stds: np.ndarray, beta: float = 0.5, ratio: float = 0.99, batch: int = 768) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, threshold per group) of RLPR's EMA std filter over groups in order."""
    stds = np.asarray(stds, np.float64)
    k = np.arange(len(stds)) // batch
    means = np.bincount(k, stds) / np.bincount(k) if len(stds) else np.zeros(0)
    # EMA_k = ρ·EMA_{k−1} + (1 − ρ)·m_k with EMA_1 = m_1: a short recurrence over batches, not rows
    ema = np.empty_like(means)
    for i, m in enumerate(means):
        ema[i] = m if i == 0 else ratio * ema[i - 1] + (1 - ratio) * m
    threshold = beta * ema[k]
    return stds >= threshold, threshold


def max_variance_subsets(values: np.ndarray, groups: np.ndarray, m: int) -> np.ndarray:
    """Keep mask: in each group the m values of largest (population) variance, all of a
    group with at most m (PODS's max-variance down-sampling; module docstring)."""
    values = np.asarray(values, np.float64)
    keep = np.zeros(len(values), dtype=bool)
    order = np.lexsort((values, groups))  # by group, then value ascending (stable)
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0]) if len(values) else np.zeros(0, int)
    for s, e in zip(starts, np.r_[starts[1:], len(values)]):
        idx = order[s:e]
        if len(idx) <= m:
            keep[idx] = True
            continue
        v = values[idx]
        c1, c2 = np.r_[0.0, np.cumsum(v)], np.r_[0.0, np.cumsum(v * v)]
        i = np.arange(m + 1)  # i largest and m − i smallest
        s1 = c1[m - i] + c1[-1] - c1[len(v) - i]
        s2 = c2[m - i] + c2[-1] - c2[len(v) - i]
        best = int(np.argmax(s2 / m - (s1 / m) ** 2))
        keep[idx[: m - best]] = True
        keep[idx[len(v) - best:]] = True
    return keep


def reward_config(lake: Lake, run: str, kind: str, chosen: str | None, who: str) -> str:
    """The rewards config whose `kind` values the selection reads: the one in `chosen`
    (comma-separated ids) that has the kind, else the run's only one."""
    found = query(lake, "SELECT DISTINCT config_id FROM token_rewards WHERE run_id = $run AND kind = $kind ORDER BY 1",
                  {"run": run, "kind": kind}).column("config_id").to_pylist()
    named = [c for c in (chosen or "").split(",") if c.strip() in found]
    if len(named) == 1:
        return named[0].strip()
    if not found:
        raise TokenmillError(f"{who}: run {run!r} has no token rewards of kind {kind}",
                             fix=f"label them first: tokenmill label --run {run} --labelers rewards --kinds {kind}")
    if len(found) > 1:
        raise TokenmillError(f"{who}: run {run!r} has {len(found)} rewards configs with kind {kind} ({', '.join(found)})",
                             fix="name one with --param configs=<config id>")
    return found[0]


def selected_rollouts(lake: Lake, run: str, params: dict) -> pa.Array | None:
    """Ids of the rollouts the selection parameters keep (None: no selection asked)."""
    beta, m = params.get("std_filter_beta"), params.get("select_m")
    if beta is None and m is None:
        return None
    keep_ids = None
    if beta is not None:
        kind = params.get("std_filter_kind", "rlpr")
        t = _scalars(lake, run, kind, params, "std filter")
        groups = _group_ids(t)
        stds = group_std(_values(t, kind), groups)
        keep_group, _ = ema_std_keep(stds, float(beta), float(params.get("std_filter_ema", 0.99)),
                                     int(params.get("std_filter_batch", 768)))
        keep_ids = t.column("rollout_id").filter(pa.array(keep_group[groups]))
    if m is not None:
        if int(m) < 1:
            raise TokenmillError(f"select_m must be at least 1, not {m}", fix="give --param select_m=<rollouts per prompt>")
        kind = params.get("select_by", "grpo")
        t = _scalars(lake, run, kind, params, "sample selection")
        keep = max_variance_subsets(_values(t, kind), _group_ids(t), int(m))
        ids = t.column("rollout_id").filter(pa.array(keep))
        keep_ids = ids if keep_ids is None else ids.filter(pc.is_in(ids, value_set=keep_ids))
    return keep_ids


def _scalars(lake: Lake, run: str, kind: str, params: dict, who: str) -> pa.Table:
    cfg = reward_config(lake, run, kind, params.get("configs"), who)
    return query(lake, SCALARS, {"run": run, "kind": kind, "config": cfg})


def _group_ids(t: pa.Table) -> np.ndarray:
    keys = pc.binary_join_element_wise(t.column("prompt_id"), t.column("model"), "\x00")
    return pc.index_in(keys, value_set=pc.unique(keys)).to_numpy()


def _values(t: pa.Table, kind: str) -> np.ndarray:
    v = t.column("value")
    if v.null_count:
        first = t.column("rollout_id")[pc.index(pc.is_null(v), True).as_py()].as_py()
        raise TokenmillError(f"{kind} rewards are null on {v.null_count} rollouts (e.g. {first})",
                             fix="select on a kind defined on every rollout (rlpr needs a reference answer per prompt)")
    return v.to_numpy(zero_copy_only=False).astype(np.float64)
