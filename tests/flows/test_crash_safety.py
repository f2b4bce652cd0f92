"""Crash safety and resume: `tokenmill pipeline` SIGKILLed at several points, then re-run.

Each case starts the real command line (its own process group, against the session's
Prefect API) into a fresh lake, waits until a stage has committed its first file, kills
the whole group with SIGKILL, checks what the killed run left, re-runs it to completion
and compares the lake with one uninterrupted run's: same rows, same keys, no duplicates,
nothing DuckDB sees that is not a whole committed file, and nothing finished redone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import lake_state, stop_process, tokenmill_env, visible_files
from tokenmill.storage.lake import DONE_MARKER, LOCK_NAME, TMP_SUFFIX, Lake

RUN = "crash"
SMALL = ["--run", RUN, "--prompts", "8", "--samples", "2", "--arm", "sft", "--steps", "2", "--batch", "4",
         "--eval-prompts", "8"]
FINISH_TIMEOUT = 300


def pipeline_args(lake: Path) -> list[str]:
    return ["pipeline", "--lake", str(lake), *SMALL]


def finished_files(lake: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every finished file: not a temp or lock file,
    not inside an artifact or dataset folder without its DONE marker, not a generated
    shard in staging whose rollouts file (written last) is missing."""
    out = {}
    for f in lake.rglob("*"):
        rel = f.relative_to(lake).as_posix()
        if not f.is_file() or f.name == LOCK_NAME or f.name.endswith(TMP_SUFFIX):
            continue
        if rel.startswith(("_artifacts/", "_datasets/")) and not (f.parent / DONE_MARKER).exists():
            continue  # artifact and dataset folders are flat: DONE sits beside their files
        if "/generated/" in rel and not (f.parent / "rollouts.parquet").exists():
            continue
        st = f.stat()
        out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def what_changed(before: dict, after: dict) -> dict[str, int]:
    """New files per top-level area (table, `_staging/…/<stage>`, `_artifacts`, `_datasets`)."""
    areas: dict[str, int] = {}
    for rel in sorted(set(after) - set(before)):
        parts = rel.split("/")
        area = f"_staging/{parts[3]}" if parts[0] == "_staging" and len(parts) > 3 else parts[0]
        areas[area] = areas.get(area, 0) + 1
    return areas


def wait_for(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tokenmill did not finish in {timeout} s:\n{proc.log.read_text()[-3000:]}\n{stacks(proc)}")


def stacks(proc: subprocess.Popen) -> str:
    """The Python stacks of a stuck process (py-spy, if installed), for the failure message."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return ""
    try:
        out = subprocess.run([str(spy), "dump", "--pid", str(proc.pid)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"(py-spy failed: {e})"
    return out.stdout[-6000:] + out.stderr[-1000:]


@pytest.fixture(scope="module")
def reference(prefect_api_url, tmp_path_factory) -> dict:
    """The lake state of one uninterrupted run."""
    lake = tmp_path_factory.mktemp("reference") / "lake"
    log = lake.parent / "tokenmill.log"
    env = tokenmill_env(prefect_api_url)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("tokenmill")), *pipeline_args(lake)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.log = log
    try:
        t0 = time.monotonic()
        assert wait_for(proc, FINISH_TIMEOUT) == 0, log.read_text()[-3000:]
        print(f"\nuninterrupted pipeline: {time.monotonic() - t0:.1f} s")
    finally:
        stop_process(proc)
    state = lake_state(lake)
    assert {"prompts", "rollouts", "tokens", "scores", "critical", "token_rewards", "model_artifacts", "train_metrics",
            "model_eval"} <= set(state)
    return state


# kill as soon as this table has a committed file: what the pipeline is doing then
KILL_POINTS = {
    "prompts": "generating the rollouts",
    "rollouts": "training the critical labeler's pos model",
    "model_artifacts": "between contrast models (pos stored, neg training)",
    "token_rewards": "scoring and labelling shards",
    "train_metrics": "evaluating the base and trained models",
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_pipeline_killed_then_rerun_matches_an_uninterrupted_run(point, reference, spawn, tmp_path):
    lake = tmp_path / "lake"
    proc = spawn(*pipeline_args(lake))
    t0 = time.monotonic()
    while not visible_files(lake, point):
        if proc.poll() is not None:
            pytest.fail(f"the pipeline exited ({proc.returncode}) before {point} had a file:\n{proc.log.read_text()[-3000:]}")
        if time.monotonic() - t0 > FINISH_TIMEOUT:
            pytest.fail(f"no {point} file after {FINISH_TIMEOUT} s")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert wait_for(proc, 30) == -signal.SIGKILL  # it died by the signal, not by finishing
    killed_at = time.monotonic() - t0

    # what the killed run left is already consistent: whole files only, no duplicates
    partial = lake_state(lake)
    assert partial != reference
    # a training killed mid-copy leaves its artifact without DONE: reported, redone by the re-run
    assert {p.kind for p in Lake(str(lake)).check()} <= {"stray_temp", "incomplete_artifact"}
    before = finished_files(lake)

    rerun = spawn(*pipeline_args(lake))
    t1 = time.monotonic()
    assert wait_for(rerun, FINISH_TIMEOUT) == 0, rerun.log.read_text()[-3000:]
    after = finished_files(lake)
    print(f"\nkilled at {point} ({KILL_POINTS[point]}) after {killed_at:.1f} s; re-run {time.monotonic() - t1:.1f} s "
          f"wrote {what_changed(before, after)}")

    assert lake_state(lake) == reference  # same tables, rows and keys as the uninterrupted run
    assert {p.kind for p in Lake(str(lake)).check()} <= {"stray_temp"}
    # finished work is skipped, not redone: no file complete at the kill was rewritten
    changed = sorted(rel for rel, stat in before.items() if after.get(rel) != stat)
    assert not changed, f"the re-run rewrote finished files: {changed[:10]}"
