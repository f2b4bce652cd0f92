"""Progress in the Prefect UI: whole percents, at most one API update a second, always the last."""

from __future__ import annotations

import time

import pytest

from tokenmill import prefect_ui, progress


def test_a_fast_stage_updates_its_ui_progress_about_once_a_second_and_ends_at_100(prefect_harness, monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tokenmill.report.artifacts import artifact_key

    calls = []
    real = prefect_ui.update_progress
    monkeypatch.setattr(prefect_ui, "update_progress", lambda *a: (calls.append(a[2]), real(*a)))

    @flow
    def steps() -> float:
        t0 = time.monotonic()
        progress.start("train fast", 500)
        for _ in range(500):
            progress.advance("train fast")
        return time.monotonic() - t0

    seconds = steps()
    assert calls[-1] == 500 and len(calls) <= 1 + seconds / progress.PUBLISH_EVERY_S, (calls, seconds)
    with get_client(sync_client=True) as client:
        art = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[artifact_key("progress", "train fast")])))[-1]
    assert float(art.data) == pytest.approx(100.0) and art.description == "train fast: 500/500"
