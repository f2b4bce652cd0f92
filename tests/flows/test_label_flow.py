"""The label flow on a real Prefect API: scores what is missing, labels, and re-runs idempotently."""

import pytest

from tokenmill.config import CriticalConfig, LabelConfig, RewardsConfig
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

TABLES = ("scores", "token_rewards", "critical", "model_artifacts")


def counts(lake) -> dict:
    con = connect(Lake(lake))
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def config(lake) -> LabelConfig:
    return LabelConfig(lake=str(lake), run_id="r1", models={"ref": "tiny-large"},
                       rewards=RewardsConfig(kinds=["dpo", "grpo", "tempo"]), critical=CriticalConfig(train_steps=10))


def test_label_flow_scores_labels_and_reruns_without_duplicates(prefect_harness, copy_lake):
    from tokenmill.flows.label import label_flow

    first = label_flow(config(copy_lake))
    after = counts(copy_lake)
    con = connect(Lake(copy_lake))
    tokens = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
    assert first["rows"]["rewards:dpo"] == tokens and after["token_rewards"] == 3 * tokens
    assert after["critical"] == first["rows"]["critical:critical"] > 0
    # scores: policy and ref on every token (dpo), pos and neg on incorrect rollouts (critical)
    assert dict(con.execute("SELECT model, count(*) FROM scores WHERE model IN ('policy', 'ref') GROUP BY 1").fetchall()) \
        == {"policy": tokens, "ref": tokens}
    second = label_flow(config(copy_lake))
    assert counts(copy_lake) == after
    assert sum(second["rows"].values()) == 0


def test_label_flow_refuses_a_run_without_rollouts(prefect_harness, copy_lake):
    from tokenmill.flows.label import check_label_run

    with pytest.raises(TokenmillError, match="run 'nope' has no rollouts") as e:
        check_label_run(LabelConfig(lake=str(copy_lake), run_id="nope"))
    assert "r1" in e.value.fix


def test_label_flow_refuses_unknown_labelers_and_missing_roles(copy_lake):
    from tokenmill.flows.label import check_label_run

    with pytest.raises(TokenmillError, match="unknown labeler 'halluc'"):
        check_label_run(LabelConfig(lake=str(copy_lake), run_id="r1", labelers=["halluc"]))
    with pytest.raises(TokenmillError, match="no model given for role 'ref'"):
        check_label_run(LabelConfig(lake=str(copy_lake), run_id="r1", labelers=["rewards"], models={}))


def test_label_flow_runs_the_routing_labeler_on_the_large_models_rollouts(prefect_harness, copy_lake):
    from tests.conftest import make_run
    from tokenmill.flows.label import label_flow

    # a run with both models: tiny-small's own rollouts are not routing trajectories
    make_run(str(copy_lake), run_id="both", models=("tiny-small", "tiny-large"), n_prompts=6, samples=1, temperature=0.0)
    out = label_flow(LabelConfig(lake=str(copy_lake), run_id="both", labelers=["routing"]))
    con = connect(Lake(copy_lake))
    large_tokens = con.execute("SELECT sum(num_tokens) FROM rollouts WHERE run_id = 'both' AND model = 'tiny-large'").fetchone()[0]
    assert out["rows"]["routing:routing"] == large_tokens == out["rows"]["routing:router_features"]
    assert con.execute("SELECT DISTINCT large_model, small_model FROM routing").fetchall() == [("tiny-large", "tiny-small")]
    assert sum(label_flow(LabelConfig(lake=str(copy_lake), run_id="both", labelers=["routing"]))["rows"].values()) == 0
