"""Scoring token labels against the process oracle: hit@k worked by hand, then on a run."""

import numpy as np
import pytest

from tokenmill.errors import TokenmillError
from tokenmill.labelers.process.labeler import ProcessLabeler
from tokenmill.storage.catalog import connect, query
from tokenmill.studies.oracle import hit_at_k, oracle_scores


def test_hit_at_k_ranks_within_each_rollout_ties_to_the_earlier_token():
    # rollout 0: scores [0.1, 0.9, 0.5], error at 2 (rank 2); rollout 1: [0.3, 0.3], error at 1 (tie: rank 2)
    s = np.array([0.1, 0.9, 0.5, 0.3, 0.3])
    y = np.array([0, 0, 1, 0, 1], bool)
    g = np.array([0, 0, 0, 1, 1])
    assert hit_at_k(s, y, g, 1) == 0.0
    assert hit_at_k(s, y, g, 2) == 1.0
    assert hit_at_k(s[:3], y[:3], g[:3], 1) == 0.0 and hit_at_k(s[:3], y[:3], g[:3], 2) == 1.0


def test_oracle_scores_each_label_on_the_rollouts_with_a_first_error(labelled):
    with pytest.raises(TokenmillError, match="no process labels"):
        oracle_scores(labelled, "r1")
    for shard in labelled.files("rollouts", "r1"):
        ProcessLabeler().label_shard(labelled, "r1", shard)
    table = {r["method"]: r for r in oracle_scores(labelled, "r1", ks=(1, 3)).to_pylist()}
    con = connect(labelled)
    # hand labels: p_ce = 1 − pos/10 on incorrect rollouts, so −p_ce ranks the last token first
    expect = con.execute("""
        WITH e AS (SELECT rollout_id, max(pos) FILTER (WHERE first_error) AS err, max(pos) AS last FROM process_labels
                   GROUP BY 1 HAVING bool_or(first_error))
        SELECT avg((err = last)::INT), count(*) FROM e JOIN (SELECT DISTINCT rollout_id FROM critical) USING (rollout_id)
    """).fetchone()
    assert table["p_ce"]["rollouts"] == expect[1] > 0 and table["p_ce"]["hit@1"] == pytest.approx(expect[0])
    n_bad = con.execute("SELECT count(DISTINCT rollout_id) FROM process_labels WHERE first_error").fetchone()[0]
    assert table["entropy"]["rollouts"] == table["random"]["rollouts"] == n_bad  # every token has entropy
    assert table["grpo"]["auc"] == pytest.approx(0.5)  # one value per rollout (0.5 on every token): no location
    assert table["d3s"]["rollouts"] == 0 and table["d3s"]["auc"] is None  # not labelled in this run
    for r in table.values():
        assert r["hit@1"] is None or r["hit@1"] <= r["hit@3"]


def test_r2r_scores_rank_the_mismatches_and_the_neutral_ones_first(labelled):
    import pyarrow as pa

    from tokenmill.labelers.base import provenance
    from tokenmill.schema import ROUTING

    for shard in labelled.files("rollouts", "r1"):
        ProcessLabeler().label_shard(labelled, "r1", shard)
    # hand routing labels on the rollouts with an error: the first wrong token a neutral mismatch,
    # the first token an undecidable one (ties with it under r2r), every other token identical
    t = query(labelled, """
        WITH e AS (SELECT rollout_id, max(pos) FILTER (WHERE first_error) AS err FROM process_labels
                   GROUP BY 1 HAVING bool_or(first_error))
        SELECT rollout_id, pos, token_id, CASE WHEN pos = err THEN 1 WHEN pos = 0 THEN 3 ELSE 0 END::TINYINT AS label, err
        FROM tokens JOIN e USING (rollout_id) WHERE run_id = 'r1' ORDER BY 1, 2""", {})
    n = t.num_rows
    label = t.column("label")
    labelled.commit("routing", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "label": label,
        "large_token_id": t.column("token_id"), "small_token_id": t.column("token_id"),
        "is_mismatch": pa.compute.not_equal(label, 0), "small_continuation": pa.nulls(n, pa.string()),
        "large_continuation": pa.nulls(n, pa.string()), "verifier": ["outcome"] * n, "verdict": pa.nulls(n, pa.int8()),
        "verdict_raw": pa.nulls(n, pa.string()), "small_model": ["s"] * n, "large_model": ["l"] * n,
        **provenance(n, "routing", "2", {}, {}),
    }, schema=ROUTING.schema))
    table = {r["method"]: r for r in oracle_scores(labelled, "r1", ks=(1, 2)).to_pylist()}
    errs = np.array(sorted(set(zip(t.column("rollout_id").to_pylist(), t.column("err").to_pylist()))), dtype=object)
    at_zero = float(np.mean(errs[:, 1] == 0))
    assert table["r2r"]["rollouts"] == table["r2r_neutral"]["rollouts"] == len(errs) > 0
    # r2r: the error and token 0 tie at 1, the earlier wins — top-1 only where the error is token 0
    assert table["r2r"]["hit@1"] == pytest.approx(at_zero) and table["r2r"]["hit@2"] == 1.0
    assert table["r2r_neutral"]["hit@1"] == 1.0 and table["r2r_neutral"]["auc"] == 1.0
