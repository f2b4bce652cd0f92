"""The label-family registry drives curation, the viewer, the plots and the summary: on a
run with two configs of one family they agree on each config's values and never average."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tokenmill import labelers
from tokenmill.errors import TokenmillError
from tokenmill.labelers.base import config_id, provenance
from tokenmill.report import token_view as V
from tokenmill.report.plots import label_panels
from tokenmill.report.summary import label_summary
from tokenmill.schema import TOKEN_REWARDS
from tokenmill.storage.catalog import connect
from tokenmill.curation.curate import run_recipe

FIRST = config_id("rewards", "1", {}, {}, "grpo")  # write_hand_labels: 0.5 on every token


@pytest.fixture
def two_grpo(labelled):
    """The labelled lake with a second grpo config: value = pos / 4 on every token."""
    t = labelled.read("tokens", "r1", columns=["rollout_id", "pos"])
    n = t.num_rows
    labelled.commit("token_rewards", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "kind": ["grpo"] * n,
        "value": pa.array(t.column("pos").to_numpy() / 4, pa.float32()), "flag": pa.nulls(n, pa.bool_()),
        **provenance(n, "rewards", "1", {}, {"beta": 2}, "grpo")}, schema=TOKEN_REWARDS.schema))
    return labelled, config_id("rewards", "1", {}, {"beta": 2}, "grpo")


def test_every_family_declares_its_outputs_once():
    names = [o.name for _, _, o in labelers.outputs()]
    assert len(names) == len(set(names))
    assert {"rewards", "critical", "routing", "hallucination", "ast"} <= set(labelers.families())
    for fam in labelers.families().values():
        assert fam.tables and fam.scopes and fam.paper


def test_two_configs_of_one_family_are_picked_never_averaged(two_grpo):
    lake, second = two_grpo
    params = {"weight": "grpo", "where": "true"}
    with pytest.raises(TokenmillError, match="2 grpo configs") as e:
        run_recipe(lake, "weighted-sft", ["r1"], params)
    assert "configs=" in e.value.fix
    tokens = lake.read("tokens", "r1", columns=["rollout_id", "pos"]).sort_by([("rollout_id", "ascending"), ("pos", "ascending")])
    pos = tokens.column("pos").to_numpy()
    expect = {FIRST: np.full(len(pos), 0.5), second: pos / 4}
    con = connect(lake, read_only=True)
    rid = tokens.column("rollout_id")[0].as_py()
    asked = V.rollout_detail(con, "r1", rid)
    assert asked["configs"]["ask"] == {"grpo": sorted([FIRST, second])} and set(asked["labels"]["grpo"]) == {None}
    summary = {r["config_id"]: r for r in label_summary(lake, "r1").to_pylist() if r["output"] == "grpo"}
    panels = {t: d for t, _, d in label_panels(lake, "r1")}
    for cid, want in expect.items():
        _, _, rows = run_recipe(lake, "weighted-sft", ["r1"], {**params, "configs": cid})
        got = np.concatenate([np.asarray(w) for w in rows.column("weights").to_pylist()])
        assert got.mean() == pytest.approx(want.mean(), abs=1e-6)  # curation
        view = V.rollout_detail(con, "r1", rid, cid)["labels"]["grpo"]
        mine = pos[tokens.column("rollout_id").to_numpy(zero_copy_only=False) == rid]
        assert view == pytest.approx(list(want[: len(mine)] if cid == FIRST else mine / 4), abs=1e-4)  # viewer
        assert summary[cid]["mean"] == pytest.approx(want.mean(), abs=1e-4)  # summary: one row per config
        assert summary[cid]["rows"] == len(pos)
        assert np.sort(panels[f"GRPO advantage [{cid[:8]}]"]) == pytest.approx(np.sort(want), abs=1e-6)  # plots
    assert "GRPO advantage" not in panels  # no pooled panel
    con.close()


def test_naming_a_config_the_run_lacks_is_refused(labelled):
    with pytest.raises(TokenmillError, match="is not a labeller config of run 'r1'"):
        run_recipe(labelled, "weighted-sft", ["r1"], {"weight": "grpo", "where": "true", "configs": "nope"})


def test_configs_on_disjoint_rollouts_are_read_together(labelled):
    # critical's configs differ per policy (their contrast models): one config per model's rollouts
    from tokenmill.schema import CRITICAL

    rollouts = labelled.read("rollouts", "r1", columns=["rollout_id", "verdict"]).to_pylist()
    good = sorted(r["rollout_id"] for r in rollouts if r["verdict"] == "correct")
    t = labelled.read("tokens", "r1", columns=["rollout_id", "pos", "token_id"])
    t = t.filter(pa.compute.is_in(t.column("rollout_id"), value_set=pa.array(good)))
    n = t.num_rows
    _, _, pairs_before = run_recipe(labelled, "cdpo-pairs", ["r1"])
    labelled.commit("critical", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "token_id": t.column("token_id"),
        "p_ce": pa.array(np.full(n, 0.25), pa.float32()), "weight": pa.array(np.full(n, 0.75), pa.float32()),
        "rank": pa.array(np.ones(n), pa.int32()), "is_critical": pa.array(np.zeros(n, bool)),
        "pos_model": ["p2"] * n, "neg_model": ["n2"] * n, "beta": pa.array(np.ones(n), pa.float32()),
        **provenance(n, "critical", "1", {"policy": "other"}, {})}, schema=CRITICAL.schema))
    _, _, rows = run_recipe(labelled, "weighted-sft", ["r1"], {"weight": "critical_weight", "where": "verdict = 'correct'"})
    assert {w for ws in rows.column("weights").to_pylist() for w in ws} == {0.75}
    _, p, pairs = run_recipe(labelled, "cdpo-pairs", ["r1"])  # rejected rollouts carry only the first config
    assert p["config"] is None and pairs.equals(pairs_before)
    con = connect(labelled, read_only=True)
    d = V.rollout_detail(con, "r1", good[0])
    con.close()
    assert d["configs"]["ask"] == {} and set(d["labels"]["critical_weight"]) == {0.75}
    assert [r["output"] for r in label_summary(labelled, "r1").to_pylist()].count("critical_weight") == 1
