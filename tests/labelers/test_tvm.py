"""TVM value targets: the formula on a hand-worked tree, the labeler on a real run, and its
labels in curation, the viewer, the plots and the summary through the registry alone."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tokenmill.cli import app
from tokenmill.errors import TokenmillError
from tokenmill.labelers.tvm.targets import tvm_targets
from tokenmill.report import token_view as V
from tokenmill.report.plots import label_panels
from tokenmill.report.summary import label_summary
from tokenmill.storage.catalog import connect, query
from tokenmill.storage.lake import Lake
from tokenmill.curation.curate import run_recipe


def test_targets_are_the_share_of_correct_rollouts_through_each_prefix():
    # one problem, three samples: [1 2 3] correct, [1 2 4] wrong, [1 5] correct
    v, paths = tvm_targets(np.array([1, 2, 3, 1, 2, 4, 1, 5]), np.array([3, 3, 2]), np.array([1, 0, 1]), np.zeros(3))
    # "1" is shared by all three (2 of 3 correct), "1 2" by two (1 of 2), then each path is its own
    assert v == pytest.approx([2 / 3, 1 / 2, 1, 2 / 3, 1 / 2, 0, 2 / 3, 1])
    assert paths.tolist() == [3, 2, 1, 3, 2, 1, 3, 1]


def test_groups_never_share_a_prefix():
    v, paths = tvm_targets(np.array([7, 7]), np.array([1, 1]), np.array([1, 0]), np.array(["a", "b"]))
    assert v.tolist() == [1.0, 0.0] and paths.tolist() == [1, 1]


@pytest.fixture
def tvm_lake(copy_lake):
    r = CliRunner().invoke(app, ["label", "--lake", str(copy_lake), "--run", "r1", "--labelers", "tvm"])
    assert r.exit_code == 0, r.output
    return Lake(str(copy_lake))


def test_the_cli_labels_a_run_and_every_reader_shows_the_family(tvm_lake):
    lake = tvm_lake
    t = query(lake, """SELECT r.prompt_id, r.model, r.verdict, v.pos, v.value, v.paths, v.rollout_id,
                              r.completion_token_ids[1] AS first
                       FROM tvm_targets v JOIN rollouts r USING (run_id, rollout_id) WHERE run_id = 'r1'""").to_pylist()
    assert t
    # the first token's target: the share of correct rollouts of its prompt and model starting with that token
    rollouts = query(lake, "SELECT prompt_id, model, verdict, completion_token_ids[1] AS first FROM rollouts "
                           "WHERE run_id = 'r1' AND verdict IN ('correct', 'incorrect')").to_pylist()
    for row in [x for x in t if x["pos"] == 0][:20]:
        same = [x for x in rollouts if (x["prompt_id"], x["model"], x["first"]) == (row["prompt_id"], row["model"], row["first"])]
        assert row["paths"] == len(same)
        assert row["value"] == pytest.approx(np.mean([x["verdict"] == "correct" for x in same]))
    # a rollout's value at its last token is its own outcome once no other rollout shares the prefix
    for row in t:
        if row["paths"] == 1:
            assert row["value"] == (1.0 if row["verdict"] == "correct" else 0.0)
    mean = np.mean([x["value"] for x in t])
    # curation: a weight expression over the new column
    _, _, rows = run_recipe(lake, "weighted-sft", ["r1"], {"weight": "tvm_value", "where": "verdict IN ('correct', 'incorrect')"})
    weights = np.concatenate([np.asarray(w, float) for w in rows.column("weights").to_pylist()])
    assert weights.mean() == pytest.approx(mean, abs=1e-6)
    # viewer: a label with its legend, present on a labelled rollout
    assert V.LABEL_BY_NAME["tvm_value"].domain == (0.0, 1.0)
    con = connect(lake, read_only=True)
    d = V.rollout_detail(con, "r1", t[0]["rollout_id"])
    con.close()
    assert "tvm_value" in d["present"] and "tvm_paths" in d["extra"]
    # report plots and the label summary
    assert "TVM value target" in [title for title, _, _ in label_panels(lake, "r1")]
    row = [r for r in label_summary(lake, "r1").to_pylist() if r["output"] == "tvm_value"]
    assert len(row) == 1 and row[0]["mean"] == pytest.approx(mean, abs=1e-4) and row[0]["rows"] == len(t)


def test_a_family_setting_is_given_with_set(copy_lake):
    r = CliRunner().invoke(app, ["label", "--lake", str(copy_lake), "--run", "r1", "--labelers", "tvm",
                                 "--set", "tvm.target=reward"])
    assert r.exit_code == 0, r.output
    params = query(Lake(str(copy_lake)), "SELECT DISTINCT params FROM tvm_targets").column("params").to_pylist()
    assert params == ['{"target":"reward"}']
    bad = CliRunner().invoke(app, ["label", "--lake", str(copy_lake), "--run", "r1", "--labelers", "tvm",
                                   "--set", "tvm.targt=reward"])
    assert isinstance(bad.exception, TokenmillError) and "tvm has no setting 'targt'" in str(bad.exception)
