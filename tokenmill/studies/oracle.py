"""How well does each token label find the first wrong token? Scored against the `process`
oracle (the world's exact step checker) on the same rollouts.

Rollouts scored: those with a first error (`process_error`). A method gives every token
of them a suspicion score s_t, higher = more likely the error:

  p_ce       −p_CE (cDPO: the negative model prefers the token)
  entropy    the policy's entropy H_t at the token
  surprise   −log π(y_t): the policy's own surprise at its token
  d3s        D³S's |A|·H
  tempo      −A_TEMPO (the most negative credit)
  grpo       −A_GRPO (one value per rollout: a baseline that cannot locate anything)
  r2r        R2R's divergence point: 1 where the small model's argmax differs from the token
             (any class but identical), else 0 (routing labels: a large model's rollouts only)
  r2r_neutral  R2R's classes ranked neutral 2 > divergent, undecidable 1 > identical 0. With the
             outcome verifier, a mismatch on an incorrect trajectory (r = 0) is neutral only
             when the small token, continued by the large model, scores better (r̂ > r) — a
             place where the answer could have been saved; r̂ = r = 0 is undecidable, and
             divergent (r̂ < r) cannot occur there
  random     a uniform draw (seeded)

Per method, over the rollouts where it has a score on every token:
  hit@k   share of rollouts whose first wrong token is among their k highest-scoring tokens
          (ties: the earlier token first); random's expectation is E[min(k, L)/L]
  AUC     ROC AUC of s_t for "is the first wrong token" over all their tokens (ties: half)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tokenmill import labelers
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.metrics import auc_or_none

METHODS = {"p_ce": "-p_ce", "entropy": "entropy", "surprise": "-logprob", "d3s": "d3s", "tempo": "-tempo",
           "grpo": "-grpo", "r2r": "(routing <> 'identical')::INT",
           "r2r_neutral": "CASE routing WHEN 'identical' THEN 0 WHEN 'neutral' THEN 2 WHEN 'divergent' THEN 1 "
                          "WHEN 'undecidable' THEN 1 END"}
_USES = ("p_ce", "d3s", "tempo", "grpo", "routing", "process_error")


def oracle_scores(lake: Lake, run: str, ks: tuple[int, ...] = (1, 3), configs: str | None = None,
                  seed: int = 0) -> pa.Table:
    """One row per method: rollouts scored, hit@k per k, AUC (module docstring)."""
    found = labelers.configs_in(lambda sql, binds: query(lake, sql, binds).to_pylist(), run)
    if "process" not in found:
        raise TokenmillError(f"oracle: run {run!r} has no process labels",
                             fix=f"label it first: tokenmill label --run {run} --labelers process")
    used = {labelers.scope_of_output(n)[1].name for n in _USES}
    picked, _ = labelers.pick_configs(found, configs, "oracle", run, used=used, how="--configs")
    sql, binds = labelers.token_labels_sql(picked, list(_USES))
    scores = ", ".join(f"({expr})::DOUBLE AS {name}" for name, expr in METHODS.items())
    t = query(lake, f"""WITH tl AS ({sql}),
        bad AS (SELECT rollout_id FROM tl GROUP BY rollout_id HAVING bool_or(coalesce(process_error, false)))
        SELECT tl.rollout_id, tl.pos, coalesce(process_error, false) AS y, {scores}
        FROM tl JOIN bad USING (rollout_id) ORDER BY tl.rollout_id, tl.pos""", {**binds, "run": run})
    rid = t.column("rollout_id").to_numpy(zero_copy_only=False)
    y = t.column("y").to_numpy(zero_copy_only=False).astype(bool)
    _, group = np.unique(rid, return_inverse=True)
    columns = {name: t.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in METHODS}
    columns["random"] = np.random.default_rng(seed).random(len(y))
    rows = []
    for name, s in columns.items():
        # a rollout counts for a method only where it scores every one of its tokens
        missing = np.bincount(group, np.isnan(s), minlength=group.max() + 1 if len(group) else 0) > 0
        keep = ~missing[group]
        row = {"method": name, "rollouts": int((~missing).sum()), "tokens": int(keep.sum())}
        for k in ks:
            row[f"hit@{k}"] = _round(hit_at_k(s[keep], y[keep], group[keep], k))
        row["auc"] = _round(auc_or_none(s[keep], y[keep]) if keep.any() else None)
        rows.append(row)
    return pa.Table.from_pylist(rows)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def hit_at_k(scores: np.ndarray, y: np.ndarray, group: np.ndarray, k: int) -> float | None:
    """Share of groups whose positive token is among their k highest scores (ties: the
    earlier token first, as a stable sort by descending score within each group gives)."""
    if not len(scores):
        return None
    order = np.lexsort((np.arange(len(scores)), -scores, group))  # by group, score descending, position
    g = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    hit = np.zeros(g.max() + 1, bool)
    hit[g[(rank < k) & y[order]]] = True
    present = np.unique(g)
    return float(hit[present].mean())
