"""cDPO critical tokens: the contrastive formula by hand, then contrast models, labels and
rollout ground truth on a real run."""

import json
import math

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from tokenmill.config import CriticalConfig, TruthConfig
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.errors import TokenmillError
from tokenmill.labelers.critical.labeler import (CriticalLabeler, contrastive_p_ce, critical_truth, first_critical,
                                                 precision_at_k, rank_in_rollout)


def test_p_ce_matches_a_hand_worked_two_token_vocabulary():
    # p_pos = [0.8, 0.2], p_neg = [0.2, 0.8], β = 1:
    # s = 2·log p_pos − log p_neg = [2 ln .8 − ln .2, 2 ln .2 − ln .8] = [ln 3.2, ln 0.05]
    # softmax → [3.2, 0.05] / 3.25; token 1: 0.05 / 3.25 = 1/65
    lp_pos = torch.log(torch.tensor([[0.8, 0.2], [0.8, 0.2]]))
    lp_neg = torch.log(torch.tensor([[0.2, 0.8], [0.2, 0.8]]))
    p = contrastive_p_ce(lp_pos, lp_neg, torch.tensor([1, 0]), beta=1.0)
    assert p[0].item() == pytest.approx(1 / 65, rel=1e-5)
    assert p[1].item() == pytest.approx(64 / 65, rel=1e-5)


def test_p_ce_with_beta_zero_is_the_positive_models_probability():
    lp_pos = torch.log_softmax(torch.tensor([[0.3, -1.0, 2.0]]), -1)
    lp_neg = torch.log_softmax(torch.tensor([[5.0, 0.0, 0.0]]), -1)
    p = contrastive_p_ce(lp_pos, lp_neg, torch.tensor([2]), beta=0.0)
    assert p.item() == pytest.approx(lp_pos[0, 2].exp().item(), rel=1e-6)


def test_rank_in_rollout_orders_each_rollout_by_p_ce():
    # rollout 0: [0.5, 0.1, 0.9] → ranks [2, 1, 3]; rollout 1: []; rollout 2: [0.2, 0.2] → [1, 2] (tie: lower pos)
    ranks = rank_in_rollout(np.array([0.5, 0.1, 0.9, 0.2, 0.2]), np.array([3, 0, 2]))
    assert ranks.tolist() == [2, 1, 3, 1, 2]


@pytest.fixture
def labelled(copy_lake):
    lake = Lake(copy_lake)
    labeler = CriticalLabeler(CriticalConfig(train_steps=20, top_k=2))
    models = labeler.prepare(lake, "r1")
    counts = [labeler.label_shard(lake, "r1", s) for s in lake.files("rollouts", "r1")]
    return lake, labeler, models, counts


def test_contrast_models_are_artifacts_with_lineage(labelled):
    lake, labeler, models, _ = labelled
    assert set(models) == {("tiny-small", "arithmetic")} and set(models["tiny-small", "arithmetic"]) == {"pos", "neg"}
    arts = lake.read("model_artifacts", "r1").to_pylist()
    assert {a["role"] for a in arts} == {"pos", "neg"}
    con = connect(lake)
    # the authors' selection: one correct rollout per prompt that has one
    n_correct = con.execute("SELECT count(DISTINCT prompt_id) FROM rollouts WHERE verdict = 'correct'").fetchone()[0]
    assert {a["role"]: a["train_rollouts"] for a in arts}["pos"] == n_correct
    assert all('"policy":"tiny-small"' in a["lineage"] and lake.has_dir(a["path"]) for a in arts)
    # preparing again finds the artifacts instead of training
    again = CriticalLabeler(CriticalConfig(train_steps=20, top_k=2)).prepare(lake, "r1")
    assert again == models and lake.read("model_artifacts", "r1").num_rows == 2


def test_labels_cover_incorrect_rollouts_with_top_k_marked(labelled):
    lake, _, _, counts = labelled
    con = connect(lake)
    n_tokens = con.execute("SELECT sum(num_tokens) FROM rollouts WHERE verdict = 'incorrect'").fetchone()[0]
    assert sum(c["critical"] for c in counts) == n_tokens
    bad = con.execute("""SELECT count(*) FROM critical c JOIN tokens t USING (rollout_id, pos)
                         WHERE c.token_id != t.token_id OR abs(c.weight - (1 - c.p_ce)) > 1e-6
                            OR c.p_ce < 0 OR c.p_ce > 1 OR c.is_critical != (c.rank <= 2)""").fetchone()[0]
    assert bad == 0
    # the same full-vocabulary pass also leaves the pos/neg token statistics in `scores`
    assert set(r[0] for r in con.execute("SELECT DISTINCT model FROM scores").fetchall()) == {"pos", "neg"}


def test_relabelling_critical_adds_nothing(labelled):
    lake, labeler, _, _ = labelled
    rows = lake.read("critical", "r1").num_rows
    again = [labeler.label_shard(lake, "r1", s) for s in lake.files("rollouts", "r1")]
    assert sum(c["critical"] for c in again) == 0 and lake.read("critical", "r1").num_rows == rows


def test_replace_top1_truth_and_precision_at_k(labelled):
    lake, _, _, _ = labelled
    written = critical_truth(lake, "r1", "tiny-small", TruthConfig(definition="replace-top1", rollouts=2, k=2, max_tokens=32))
    truth = lake.read("critical_truth", "r1")
    assert written == truth.num_rows > 0
    assert pc.all(pc.not_equal(truth.column("token_id"), truth.column("alt_token_id"))).as_py()
    rates = np.concatenate([truth.column("kept_success").to_numpy(), truth.column("replaced_success").to_numpy()])
    assert set(np.unique(rates)) <= {0.0, 0.5, 1.0}  # k = 2 continuations per arm
    flagged = truth.column("is_critical").to_numpy(zero_copy_only=False)
    delta = truth.column("replaced_success").to_numpy() - truth.column("kept_success").to_numpy()
    assert (flagged == (delta >= 0.25)).all()
    row = precision_at_k(lake, "r1", k=2).to_pylist()[0]
    assert row["rollouts"] == 2 and row["positions"] == written
    for key in ("p_ce_at_k", "entropy_at_k", "random_at_k", "p_ce_hit_at_k", "random_hit_at_k"):
        assert row[key] is None or 0 <= row[key] <= 1


@pytest.mark.parametrize("counts, recover, expected", [
    ([5, 3, 0, 0, 1], 3, 2),        # the first all-failing kept prefix
    ([5, 0, 4, 0, 0], 3, 3),        # 4 > 3 correct after it: recovered, the search starts again
    ([5, 0, 4, 2, 1], 3, 1),        # no later candidate: the set-aside one
    ([5, 0, 3, 1], 3, 1),           # 3 is not more than 3: no recovery
    ([5, 2, 1], 3, -1),             # never all failing: no critical token
    ([0, 9, 0, 9], 3, 2),           # the last set-aside candidate wins
])
def test_first_critical_scans_prefixes_as_the_authors_analysis(counts, recover, expected):
    assert first_critical(np.array(counts), recover) == expected


def test_paper_truth_marks_at_most_one_critical_token_per_rollout(labelled):
    lake, _, _, _ = labelled
    cfg = TruthConfig(rollouts=2, k=3, alternatives=2, recover=1, max_tokens=24)
    written = critical_truth(lake, "r1", "tiny-small", cfg)
    truth = lake.read("critical_truth", "r1").to_pandas()
    assert written == len(truth) > 0 and truth["alt_token_id"].isna().all() and (truth["k"] == 3).all()
    assert set(np.unique(truth["kept_success"] * 3)) <= {0, 1, 2, 3}
    assert set(np.unique(truth["replaced_success"] * 2)) <= {0, 1, 2}  # 2 alternatives, one continuation each
    for _, g in truth.sort_values("pos").groupby("rollout_id"):
        expect = first_critical(np.rint(g["kept_success"].to_numpy() * 3), 1)
        assert g["is_critical"].tolist() == [int(p) == expect for p in range(len(g))] and g["is_critical"].sum() <= 1
    assert truth["params"].map(lambda p: json.loads(p)["definition"]).eq("paper").all()
    critical_truth(lake, "r1", "tiny-small", TruthConfig(definition="replace-top1", rollouts=1, k=1, max_tokens=8))
    with pytest.raises(TokenmillError, match="2 critical_truth configs"):
        precision_at_k(lake, "r1", k=2)  # two truths: which one is asked, never mixed
    paper = truth["config_id"].iloc[0]
    row = precision_at_k(lake, "r1", k=2, truth=paper).to_pylist()[0]
    assert row["positions"] == written and row["with_critical"] == int(truth["is_critical"].sum())
    assert not math.isnan(row["truth_rate"])


def test_contrast_models_are_trained_per_source_and_label_their_own_rollouts(copy_lake):
    import pyarrow as pa

    lake = Lake(copy_lake)
    rollouts = lake.read("rollouts", "r1")
    rollouts = rollouts.drop_columns([c for c in ("run_id",) if c in rollouts.column_names])
    prompts = sorted(set(rollouts.column("prompt_id").to_pylist()))
    half = set(prompts[::2])  # the run's prompts split into two sources, as a run over two worlds has them
    source = ["even" if p in half else "odd" for p in rollouts.column("prompt_id").to_pylist()]
    lake.commit("rollouts", "two", rollouts.set_column(rollouts.schema.get_field_index("source"), "source",
                                                       pa.array(source, pa.string())))
    cfg = CriticalConfig(train="tiny", top_k=1)
    cfg.train.steps = 2
    labeler = CriticalLabeler(cfg)
    models = labeler.prepare(lake, "two")
    assert set(models) == {("tiny-small", "even"), ("tiny-small", "odd")}
    lineage = {json.loads(a["lineage"])["source"] for a in lake.read("model_artifacts", "two").to_pylist()}
    assert lineage == {"even", "odd"}
    for shard in lake.files("rollouts", "two"):
        labeler.label_shard(lake, "two", shard)
    con = connect(lake)
    per_source = con.execute("""SELECT r.source, count(DISTINCT c.pos_model), count(DISTINCT c.config_id)
                                FROM critical c JOIN rollouts r USING (run_id, rollout_id) WHERE c.run_id = 'two'
                                GROUP BY 1 ORDER BY 1""").fetchall()
    assert [row[0] for row in per_source] == ["even", "odd"] and all(row[1:] == (1, 1) for row in per_source)
    assert con.execute("SELECT count(DISTINCT pos_model) FROM critical WHERE run_id = 'two'").fetchone()[0] == 2
    pooled = CriticalConfig(train="tiny", per_source=False)  # tokenmill's variant: one pair per policy
    pooled.train.steps = 2
    assert set(CriticalLabeler(pooled).prepare(lake, "two")) == {("tiny-small", None)}
