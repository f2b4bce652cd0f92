"""The efficacy flow on tiny settings: a pipeline per seed, summarised from the lake, plotted, idempotent."""

from pathlib import Path

import pytest

from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.studies.efficacy_config import EfficacyConfig
from tokenmill.studies.efficacy_flow import efficacy_flow


def test_efficacy_flow_runs_one_pipeline_per_seed_and_summarises_with_paired_intervals(prefect_harness, tmp_path):
    cfg = EfficacyConfig(lake=str(tmp_path / "lake"), run_prefix="eff", seeds=[0, 1], prompts=16, samples=2,
                         eval_prompts=16, arms=["sft", "sft-process"], sft={"steps": 3, "lr": 1e-4}, batch=4)
    out = efficacy_flow(cfg)
    assert out["runs"] == ["eff-s0", "eff-s1"]
    lake = Lake(cfg.lake)
    con = connect(lake)
    # every figure comes from the lake's model_eval rows of the study's runs
    stored = {(run, arm or "base"): acc for run, arm, acc in con.execute(
        "SELECT run_id, arm, accuracy FROM model_eval WHERE run_id LIKE 'eff-s%'").fetchall()}
    assert {(f"eff-s{r['seed']}", r["arm"]): r["accuracy"] for r in out["results"]} == pytest.approx(stored)
    summary = {r["arm"]: r for r in out["summary"]}
    assert set(summary) == {"base", "sft", "sft-process"} and all(r["seeds"] == 2 for r in summary.values())
    p = summary["sft-process"]
    diffs = [stored[(f"eff-s{s}", "sft-process")] - stored[(f"eff-s{s}", "sft")] for s in (0, 1)]
    assert p["vs"] == "sft" and p["diff_mean"] == pytest.approx(sum(diffs) / 2, abs=1e-4)
    assert p["diff_low"] <= p["diff_mean"] <= p["diff_high"] and p["vs_base"] == "base"
    # sampling differs by seed: the two runs' rollouts are not the same
    texts = con.execute("SELECT run_id, list(completion ORDER BY rollout_id) FROM rollouts WHERE run_id LIKE 'eff-s%' "
                        "GROUP BY run_id ORDER BY run_id").fetchall()
    assert texts[0][1] != texts[1][1]
    assert [Path(f).suffix for f in out["plot"]] == [".png", ".svg"] and all(Path(f).stat().st_size > 0 for f in out["plot"])
    before = con.execute("SELECT count(*) FROM model_eval").fetchone()[0]
    again = efficacy_flow(cfg)  # every pipeline idempotent: nothing trained or evaluated twice
    assert connect(lake).execute("SELECT count(*) FROM model_eval").fetchone()[0] == before
    assert again["summary"] == out["summary"]


def test_parallel_seeds_run_in_worker_processes_reporting_to_the_same_prefect_api(prefect_harness, tmp_path):
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterName

    api = os.environ.get("PREFECT_API_URL")
    cfg = EfficacyConfig(lake=str(tmp_path / "lake"), run_prefix="par", seeds=[0, 1], prompts=8, samples=2,
                         eval_prompts=8, arms=["sft"], sft={"steps": 2, "lr": 1e-4}, batch=4, parallel=2)
    out = efficacy_flow(cfg)
    assert os.environ.get("PREFECT_API_URL") == api  # put back as it was
    assert sorted((r["seed"], r["arm"]) for r in out["results"]) == [(0, "base"), (0, "sft"), (1, "base"), (1, "sft")]
    rows = connect(Lake(cfg.lake)).execute("SELECT run_id, count(*) FROM model_eval GROUP BY run_id ORDER BY run_id")
    assert rows.fetchall() == [("par-s0", 2), ("par-s1", 2)]
    with get_client(sync_client=True) as client:  # each seed's pipeline ran in a worker, a subflow of the study
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["pipeline par-s0",
                                                                                                "pipeline par-s1"])))
        assert len(runs) == 2 and all(r.state.is_completed() for r in runs)
        parents = [client.read_task_run(r.parent_task_run_id) for r in runs]
        (study,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["efficacy par"])))
        seeds = [t for t in client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(
            any_=["seed 0", "seed 1"]))) if t.flow_run_id == study.id]  # other studies on this API have seeds too
    assert {t.flow_run_id for t in parents} == {study.id}  # the UI shows both pipelines under the study
    assert sorted(t.name for t in seeds) == ["seed 0", "seed 1"]
    assert all(t.state.is_completed() for t in seeds)
