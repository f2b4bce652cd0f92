"""Concurrency: several `tokenmill` processes writing one local lake at the same time.

Each lane runs `tokenmill run` then `tokenmill label` (rewards) as real subprocesses
against the session's Prefect API; lanes run side by side. The lake they leave must equal
the one the same lanes leave when run one after the other: same tables, rows and keys, no
duplicate keys, every visible file whole, DuckDB seeing exactly the committed rows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import lake_state, stop_process, tokenmill_env

TIMEOUT = 240


def lane(lake: Path, run: str, seed: int) -> list[list[str]]:
    """The commands of one lane: roll out a run, then label it."""
    return [["run", "--lake", str(lake), "--run-id", run, "--world", "arithmetic", "--prompts", "8", "-n", "2",
             "--max-tokens", "32", "--shard-size", "4", "--seed", str(seed)],
            ["label", "--lake", str(lake), "--run", run, "--labelers", "rewards", "--kinds", "grpo,dpo"]]


def run_lane(start, commands: list[list[str]]) -> None:
    for args in commands:
        proc = start(*args)
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tokenmill {args[0]} did not finish in {TIMEOUT} s:\n{proc.log.read_text()[-3000:]}")
        assert rc == 0, f"tokenmill {' '.join(args)} exited {rc}:\n{proc.log.read_text()[-3000:]}"


def run_lanes(start, lanes: list[list[list[str]]]) -> None:
    with ThreadPoolExecutor(len(lanes)) as pool:
        for f in [pool.submit(run_lane, start, cmds) for cmds in lanes]:
            f.result()


@pytest.fixture(scope="module")
def sequential(prefect_api_url, tmp_path_factory) -> dict[str, dict]:
    """Lake states of lanes run one after the other: run `a` alone, then `a` and `b`."""
    root = tmp_path_factory.mktemp("sequential")
    procs = []

    def start(*args: str) -> subprocess.Popen:
        log = root / f"tokenmill-{len(procs)}.log"
        env = tokenmill_env(prefect_api_url)
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("tokenmill")), *args], stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.log = log
        procs.append(proc)
        return proc

    try:
        run_lane(start, lane(root / "a", "a", 1))
        shutil.copytree(root / "a", root / "ab")
        run_lane(start, lane(root / "ab", "b", 2))
    finally:
        for proc in procs:
            stop_process(proc)
    return {"a": lake_state(root / "a"), "ab": lake_state(root / "ab")}


@pytest.mark.slow
def test_two_runs_writing_one_lake_at_once_leave_what_sequential_runs_leave(sequential, spawn, tmp_path):
    lake = tmp_path / "lake"
    t0 = time.monotonic()
    run_lanes(spawn, [lane(lake, "a", 1), lane(lake, "b", 2)])
    print(f"\ntwo runs side by side: {time.monotonic() - t0:.1f} s")
    state = lake_state(lake)
    assert state == sequential["ab"]
    assert {"prompts", "rollouts", "tokens", "scores", "token_rewards"} <= set(state)


@pytest.mark.slow
def test_two_invocations_of_the_same_run_at_once_write_it_once(sequential, spawn, tmp_path):
    lake = tmp_path / "lake"
    t0 = time.monotonic()
    run_lanes(spawn, [lane(lake, "a", 1), lane(lake, "a", 1)])
    print(f"\nthe same run twice side by side: {time.monotonic() - t0:.1f} s")
    assert lake_state(lake) == sequential["a"]
