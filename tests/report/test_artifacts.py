"""What the flows show in the Prefect UI: tables, markdown summaries, progress, run names."""

import json

import pytest

from tokenmill.config import LabelConfig, RewardsConfig, RolloutConfig, SamplingConfig, SourceConfig
from tokenmill.report.artifacts import artifact_key, md_table


def read_artifacts(keys: list[str]) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    latest = {}
    for a in sorted(found, key=lambda a: a.created):
        latest[a.key] = a
    return latest


def table_rows(artifact) -> list[dict]:
    # the API hands table data back as JSON text
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_rollouts_and_label_flows_publish_tables_summaries_and_finished_progress(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    from tokenmill.flows.label import label_flow
    from tokenmill.flows.rollouts import rollouts_flow

    lake = str(tmp_path / "lake")
    run = "ui-run"
    rollouts_flow(RolloutConfig(lake=lake, run_id=run, models=["tiny-small"], shard_size=2,
                                sources=[SourceConfig(world="arithmetic", n=4)], sampling=SamplingConfig(n=2, max_tokens=16)))
    label_flow(LabelConfig(lake=lake, run_id=run, labelers=["rewards"], rewards=RewardsConfig(kinds=["grpo", "dpo"])))

    arts = read_artifacts([artifact_key("rollouts", run), artifact_key("rollouts", run, "summary"),
                           artifact_key("labels", run), artifact_key("labels", run, "summary"),
                           artifact_key("report", run), artifact_key("pass-at-k", run),
                           "progress-generate", "progress-verify-commit", "progress-score", "progress-label-rewards"])
    rows = table_rows(arts["rollouts-ui-run"])
    assert [(r["world"], r["model"], r["rollouts"]) for r in rows] == [("arithmetic", "tiny-small", 8)]
    labels = table_rows(arts["labels-ui-run"])
    assert {(r["labeler"], r["output"]) for r in labels} >= {("rewards", "grpo"), ("rewards", "dpo"), ("score", "policy")}
    summary = arts["rollouts-ui-run-summary"].data
    assert "| world | model |" in summary and f"tokenmill sql --lake {lake}" in summary
    # pass@1 from 2 samples of each of 4 prompts, in its own table and in the summary
    passk = table_rows(arts["pass-at-k-ui-run"])
    assert [(r["source"], r["k"], r["problems"], r["samples"]) for r in passk] == [("arithmetic", 1, 4, 2)]
    assert "## pass@k" in summary and "| source | model | k | pass_at_k |" in summary
    assert "tokenmill sql" in arts["labels-ui-run-summary"].data
    assert f"tokenmill view --lake {lake} --run {run}" in arts["labels-ui-run-summary"].data
    # the report step drew the run's plots beside the lake and linked each file
    report = arts["report-ui-run"].data
    for name in ("accuracy", "labels"):
        for ext in ("png", "svg"):
            path = tmp_path / "lake" / "_reports" / run / f"{name}.{ext}"
            assert path.stat().st_size > 1000 and f"({path.resolve().as_uri()})" in report
    assert f"tokenmill view --lake {lake} --run {run}" in report
    # two generation shards: the progress artifact ends at 100 %
    for key in ("progress-generate", "progress-verify-commit", "progress-score", "progress-label-rewards"):
        assert arts[key].type == "progress" and float(arts[key].data) == pytest.approx(100.0), key
    with get_client(sync_client=True) as client:
        names = {r.name for r in client.read_flow_runs()}
        tasks = {r.name for r in client.read_task_runs()}
    assert {"rollouts ui-run", "label ui-run"} <= names
    assert "pass@k ui-run" in tasks
    # shard paths shortened to their file stem: `score part-1a2b3c4d`, not a lake path
    generate = sorted(t for t in tasks if t.startswith("generate tiny-small "))
    assert len(generate) >= 2 and not any("/" in t for t in generate)
    assert any(t.startswith("score part-") for t in tasks) and any(t.startswith("rewards part-") for t in tasks)


def test_artifact_keys_and_markdown_tables_are_safe_for_the_ui():
    assert artifact_key("labels", "Run_2026.11:A") == "labels-run-2026-11-a"
    assert md_table([{"a": "x|y", "b": 0.123456, "c": None}]) == "| a | b | c |\n|---|---|---|\n| x\\|y | 0.1235 |  |\n"
