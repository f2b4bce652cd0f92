"""`tokenmill curate` and `tokenmill train` run through their flows, as `run`, `label` and
`pipeline` do: each leaves a Prefect flow run (and its artifact), not only files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import tokenmill_env
from tokenmill.storage.lake import Lake


def _tokenmill(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("tokenmill")), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _flow_runs(flow: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))


def test_curate_and_train_leave_prefect_runs(prefect_api_url, copy_lake):
    env = tokenmill_env(prefect_api_url)
    r = _tokenmill(env, "curate", "--recipe", "weighted-sft", "--run", "r1", "--lake", str(copy_lake),
                   "--param", "weight=1.0")
    assert r.returncode == 0, r.stderr
    dataset = re.search(r"dataset (\S+) \(", r.stdout).group(1)
    r = _tokenmill(env, "train", "--dataset", dataset, "--lake", str(copy_lake), "--steps", "2", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert re.search(r"model \S+ \(final loss [0-9.]+", r.stdout), r.stdout
    assert Lake(copy_lake).read("train_metrics").num_rows == 1  # logged at the last step

    curated = [f for f in _flow_runs("curate") if f.name == "curate weighted-sft" and f.parameters["cfg"]["lake"] ==
               str(copy_lake)]
    trained = [f for f in _flow_runs("train") if f.name == f"train sft {dataset}"]
    assert [f.state.type.value for f in curated] == ["COMPLETED"], curated
    assert [f.state.type.value for f in trained] == ["COMPLETED"], trained


def test_train_refuses_a_bad_objective_before_prefect_starts(copy_lake):
    r = subprocess.run([str(Path(sys.executable).with_name("tokenmill")), "train", "--dataset", "x", "--lake",
                        str(copy_lake), "--objective", "ppo"], capture_output=True, text=True, timeout=120,
                       env={**tokenmill_env("http://127.0.0.1:9/api")})  # no API there: Prefect must not be reached
    assert r.returncode == 2 and "unknown objective 'ppo'" in r.stderr and "Traceback" not in r.stderr, r.stderr
