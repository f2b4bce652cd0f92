"""Timeouts sized from the work, and the failure artifact a stopped night publishes."""

from __future__ import annotations

import pytest

from tokenmill.config import (PipelineConfig, RolloutConfig, RunnerConfig, SamplingConfig, SourceConfig, TimeoutConfig,
                              named_arms)
from tokenmill.storage.lake import Lake


def test_timeouts_are_sized_from_the_work_with_a_floor_and_overrides():
    t = TimeoutConfig()  # 0.05 s a token, at least 900 s
    assert t.task(1_000) == 900 and t.task(100_000) == pytest.approx(5_000)
    assert t.flow(1_000_000) == pytest.approx(50_000)
    assert TimeoutConfig(task_s=30).task(10**9) == 30 and TimeoutConfig(flow_s=60).flow(1) == 60
    off = TimeoutConfig(enabled=False)
    assert off.task(10**9) is None and off.flow(10**9) is None
    cfg = RolloutConfig(sources=[SourceConfig(world="arithmetic", n=100), SourceConfig(path="x.jsonl", limit=50)],
                        models=["tiny-small", "tiny-large"], sampling=SamplingConfig(n=4, max_tokens=10), shard_size=8)
    assert cfg.shard_tokens() == 8 * 4 * 10
    assert cfg.work_tokens() == (100 + 50) * 4 * 10 * 2


def _rollouts(tmp_path, timeouts: TimeoutConfig, run_id: str = "t1") -> RolloutConfig:
    return RolloutConfig(lake=str(tmp_path / "lake"), run_id=run_id, models=["tiny-small"],
                         sources=[SourceConfig(world="arithmetic", n=64)],
                         sampling=SamplingConfig(n=8, max_tokens=96, temperature=1.0), shard_size=64,
                         runner=RunnerConfig(timeouts=timeouts))


def test_a_model_task_past_its_timeout_fails_the_flow_and_a_rerun_finishes(prefect_harness, tmp_path):
    from tokenmill.flows.rollouts import rollouts_flow
    from tokenmill.flows.runners import with_runner

    cfg = _rollouts(tmp_path, TimeoutConfig(task_s=0.2))  # 64 × 8 rollouts take seconds on tiny-small
    with pytest.raises(BaseException) as e:
        with_runner(rollouts_flow, cfg.runner, cfg.work_tokens())(cfg)
    assert "timed out" in str(e.value).lower() or "timeout" in type(e.value).__name__.lower(), repr(e.value)
    assert Lake(cfg.lake).files("rollouts", "t1") == []  # nothing half-written
    again = cfg.model_copy(update={"runner": RunnerConfig()})  # the default: sized from the work
    out = with_runner(rollouts_flow, again.runner, again.work_tokens())(again)
    assert out["rollouts"] == 64 * 8


def test_a_stopped_pipeline_publishes_where_why_and_how_to_resume(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tokenmill.flows.pipeline import pipeline_flow

    cfg = PipelineConfig(lake=str(tmp_path / "lake"), run_id="night-1", prompts=64, sampling=SamplingConfig(n=8),
                         arms=named_arms(["sft"], steps=2), runner=RunnerConfig(timeouts=TimeoutConfig(task_s=0.2)))
    with pytest.raises(BaseException):
        pipeline_flow(cfg)
    with get_client(sync_client=True) as client:
        [art] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["pipeline-failed-night-1"])))
    text = art.data
    assert "night-1` timed out at stage **rollouts**" in text, text
    assert "prefect deployment run pipeline/nightly --params" in text and '"run_id":"night-1"' in text
    assert f"tokenmill pipeline --lake {cfg.lake} --run night-1" in text
