"""The pipeline flow end to end on tiny models (the efficacy study, reduced), on a real Prefect API."""

import json

import pyarrow.compute as pc
import pytest

from tokenmill.config import Arm, PipelineConfig, TrainSettings, named_arms
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.studies.efficacy import run_study, study_configs, summarise

TABLES = ("rollouts", "critical", "token_rewards", "train_metrics", "model_artifacts", "model_eval")


def counts(lake: str) -> dict:
    con = connect(Lake(lake))
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_reduced_efficacy_study_runs_the_pipeline_end_to_end_and_reruns_idempotently(prefect_harness, tmp_path):
    lake = str(tmp_path / "lake")
    arms = named_arms(["dpo", "cdpo", "tgdpo", "sft", "sft-critical", "sft-reward", "sft-process", "cdpo-on-sft",
                       "tgdpo-on-sft"], steps=3, batch=4)
    cfgs = study_configs(lake, [0], prompts=24, samples=4, eval_prompts=24, critical_steps=10, arms=arms)
    results = run_study(cfgs)
    assert sorted(results.column("arm").to_pylist()) == sorted(["base", "dpo", "cdpo", "tgdpo", "sft", "sft-critical",
                                                                "sft-reward", "sft-process", "dpo-on-sft", "cdpo-on-sft",
                                                                "tgdpo-on-sft"])
    assert "process" in cfgs[0].labelers  # the oracle arm's labels come along
    assert all(0 <= a <= 1 for a in results.column("accuracy").to_pylist())
    summary = {r["arm"]: r for r in summarise(results).to_pylist()}
    assert summary["cdpo"]["vs"] == "dpo" and summary["sft-reward"]["vs"] == "sft"
    assert summary["tgdpo-on-sft"]["vs"] == "dpo-on-sft"
    assert summary["cdpo"]["diff_mean"] == pytest.approx(summary["cdpo"]["accuracy_mean"] - summary["dpo"]["accuracy_mean"])
    # every trained model is an artifact whose lineage names its dataset and recipe
    lk = Lake(lake)
    arts = lk.read("model_artifacts", "efficacy-s0", filter=pc.field("role").isin(["sft", "dpo"])).to_pylist()
    assert len(arts) == 10 and all("dataset_id" in a["lineage"] for a in arts)
    evals = {r["arm"]: r["model"] for r in lk.read("model_eval", "efficacy-s0").to_pylist()}
    assert set(evals) == {None, *summary} - {"base"}
    # SFT then cDPO: its base model (and reference) is the sft arm's model, named by its lake path
    bases = {a["artifact_id"]: a["base_model"] for a in arts}
    assert bases[evals["cdpo-on-sft"]] == f"_artifacts/models/{evals['sft']}" and bases[evals["sft"]] == "tiny-small"
    # TGDPO's guidance: dpo token rewards of the guide arm's model against the model it was trained
    # from — the policy for dpo, the sft model for dpo-on-sft — not of the policy itself
    con = connect(lk)
    guided = con.execute("SELECT DISTINCT models FROM token_rewards WHERE kind = 'dpo' AND value <> 0").fetchall()
    refs = {json.loads(m)["dpo"]: json.loads(m)["ref"] for (m,) in guided}
    # the guides are named by their lake paths, not where this lake happens to be mounted
    assert refs == {f"_artifacts/models/{evals['dpo']}": "tiny-small",
                    f"_artifacts/models/{evals['dpo-on-sft']}": f"_artifacts/models/{evals['sft']}"}
    before = counts(lake)
    again = run_study(cfgs)
    assert counts(lake) == before  # crash → re-run → same lake; here: re-run → nothing new
    assert again.column("accuracy").to_pylist() == pytest.approx(results.column("accuracy").to_pylist())  # float32 in the lake


def test_pipeline_refuses_bad_arms_before_any_work(tmp_path):
    from tokenmill.flows.pipeline import check_pipeline

    def cfg(*arms):
        return PipelineConfig(lake=str(tmp_path / "lake"), run_id="p", arms=list(arms))

    sft = TrainSettings(objective="sft")
    with pytest.raises(TokenmillError, match=r"arm a \(cdpo-pairs\): sft needs a sequences dataset, this one holds pairs"):
        check_pipeline(cfg(Arm(name="a", recipe="cdpo-pairs", train=sft)))
    with pytest.raises(TokenmillError, match="guide 'dpo' is not an earlier arm"):
        check_pipeline(cfg(Arm(name="t", recipe="dpo-pairs", guide="dpo",
                               train=TrainSettings(objective="dpo", weighting="tgdpo"))))
    with pytest.raises(TokenmillError, match="init 'sft' is not an earlier arm"):
        check_pipeline(cfg(Arm(name="c", recipe="dpo-pairs", init="sft", train=TrainSettings(objective="dpo"))))
    with pytest.raises(TokenmillError, match="sft has no weighting 'tgdpo'"):
        check_pipeline(cfg(Arm(name="a", recipe="weighted-sft", train=TrainSettings(objective="sft", weighting="tgdpo"))))
    with pytest.raises(TokenmillError, match="unknown parameter"):
        check_pipeline(cfg(Arm(name="a", recipe="weighted-sft", params={"wieght": "1"}, train=sft)))
    with pytest.raises(TokenmillError, match="distinct names"):
        check_pipeline(cfg(*named_arms(["sft"]), *named_arms(["sft"])))
    with pytest.raises(TokenmillError, match="unknown arm"):
        named_arms(["ppo"])
    # an arm whose weight reads labels the pipeline does not make would train on weights 0
    with pytest.raises(TokenmillError, match="arm sft-process: its weight reads labels of process") as e:
        check_pipeline(cfg(*named_arms(["sft-process"])))
    assert "add process to labelers" in e.value.fix
    check_pipeline(cfg(*named_arms(["sft-process"])).model_copy(update={"labelers": ["rewards", "process"]}))
    assert not (tmp_path / "lake").exists()



def test_distillation_arms_weight_the_teachers_tokens_by_routing_class_and_entropy(prefect_harness, tmp_path):
    from tokenmill.config import ROUTING_WEIGHTS
    from tokenmill.curation.curate import run_recipe

    lake = str(tmp_path / "lake")
    arms = named_arms(["sft", "sft-entropy", "sft-routing"], steps=2, batch=4)
    (cfg,) = study_configs(lake, [0], prompts=12, samples=2, eval_prompts=8, arms=arms, teacher="tiny-large")
    assert cfg.labelers == ["rewards", "routing"] and cfg.rewards.kinds == ["entropy"]
    results = run_study([cfg])
    assert sorted(results.column("arm").to_pylist()) == ["base", "sft", "sft-entropy", "sft-routing"]
    lk = Lake(lake)
    con = connect(lk)
    # every token of the teacher's rollouts has an R2R class against the policy (the small model)
    assert con.execute("SELECT count(*), count(DISTINCT large_model), any_value(small_model) FROM routing").fetchone() == \
        (con.execute("SELECT sum(num_tokens) FROM rollouts").fetchone()[0], 1, "tiny-small")
    assert con.execute("SELECT count(DISTINCT label) FROM routing").fetchone()[0] >= 2  # mismatches were verified
    assert not lk.files("router_features", "efficacy-s0")  # labels to weight tokens: no router features written
    by_arm = {a.name: a for a in arms}
    for name, truth in [("sft-routing", "SELECT rollout_id, pos, label AS x FROM routing"),
                        ("sft-entropy", "SELECT rollout_id, pos, flag::INT AS x FROM token_rewards WHERE kind = 'entropy'")]:
        _, _, rows = run_recipe(lk, "weighted-sft", ["efficacy-s0"], by_arm[name].params)
        labels = {(r, p): x for r, p, x in con.execute(truth).fetchall()}
        assert rows.num_rows == con.execute("SELECT count(*) FROM rollouts WHERE verdict = 'correct'").fetchone()[0] > 0
        for rid, ws in zip(rows.column("rollout_id").to_pylist(), rows.column("weights").to_pylist()):
            want = [ROUTING_WEIGHTS[labels[rid, p]] if name == "sft-routing" else labels[rid, p] for p in range(len(ws))]
            assert ws == pytest.approx(want), (name, rid)
