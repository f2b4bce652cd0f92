"""Flows on a Ray cluster started by the test (`ray start --head` on loopback, stopped by pid)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow, task

from tokenmill.config import LabelConfig, RewardsConfig, RolloutConfig, RunnerConfig, SamplingConfig, SourceConfig
from tokenmill.flows.runners import model_tasks
from tokenmill.serve import stop_process
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

pytestmark = pytest.mark.slow

# keep Ray on loopback: by default it advertises the machine's network address (conftest sets
# the same for this process, before anything imports ray)
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    pytest.importorskip("prefect_ray")
    port = free_port()
    log = tmp_path_factory.mktemp("ray") / "ray.log"
    ray = str(Path(sys.executable).with_name("ray"))
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--include-dashboard", "false", "--disable-usage-stats"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, **LOOPBACK}, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "ray status" not in log.read_text() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, 20, first=signal.SIGTERM)  # ray start --block takes its daemons down on SIGTERM
        import ray as ray_mod

        if ray_mod.is_initialized():
            ray_mod.shutdown()


def test_rollouts_and_label_flows_on_ray_write_the_same_lake_as_threads(prefect_harness, ray_cluster, tmp_path):
    from tokenmill.flows.label import label_flow
    from tokenmill.flows.rollouts import rollouts_flow
    from tokenmill.flows.runners import with_runner

    def run(lake: str, runner: RunnerConfig) -> dict:
        cfg = RolloutConfig(lake=lake, run_id="ray", models=["tiny-small"], shard_size=2, runner=runner,
                            sources=[SourceConfig(world="arithmetic", n=6)], sampling=SamplingConfig(n=2, max_tokens=16))
        out = with_runner(rollouts_flow, runner)(cfg)
        with_runner(label_flow, runner)(LabelConfig(lake=lake, run_id="ray", labelers=["rewards"], runner=runner,
                                                   rewards=RewardsConfig(kinds=["dpo", "grpo"])))
        return out

    ray_out = run(str(tmp_path / "ray"), RunnerConfig(kind="ray", address=ray_cluster))
    thread_out = run(str(tmp_path / "threads"), RunnerConfig())
    assert ray_out["rollouts"] == thread_out["rollouts"] == 12

    def content(lake: str) -> dict:
        con = connect(Lake(lake))
        return {t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall() for t, cols in {
            "rollouts": "rollout_id, completion, reward",
            "token_rewards": "rollout_id, pos, kind, round(value, 4)"}.items()}

    on_ray, on_threads = content(str(tmp_path / "ray")), content(str(tmp_path / "threads"))
    assert on_ray == on_threads and len(on_ray["token_rewards"]) > 0


@task
def where_am_i() -> int:
    return os.getpid()


@flow
def placement(runner: RunnerConfig) -> list[int]:
    return model_tasks(runner, [(where_am_i, (), {}) for _ in range(3)])


def test_model_tasks_run_in_ray_workers_on_ray_and_in_process_on_threads(prefect_harness, ray_cluster):
    from tokenmill.flows.runners import with_runner

    on_ray = with_runner(placement, RunnerConfig(kind="ray", address=ray_cluster))(RunnerConfig(kind="ray", address=ray_cluster))
    assert os.getpid() not in on_ray
    assert set(with_runner(placement, RunnerConfig())(RunnerConfig())) == {os.getpid()}


def test_asking_for_gpus_a_cluster_lacks_is_refused_instead_of_waiting_forever(prefect_harness, ray_cluster):
    from tokenmill.errors import TokenmillError
    from tokenmill.flows.runners import with_runner

    runner = RunnerConfig(kind="ray", address=ray_cluster, gpus=1)
    with pytest.raises(TokenmillError, match=r"asks Ray for 1 GPU\(s\), the cluster has 0"):
        with_runner(placement, runner)(runner)


def test_a_ray_runner_without_prefect_ray_says_how_to_install_it(monkeypatch):
    import builtins

    from tokenmill.errors import TokenmillError
    from tokenmill.flows.runners import task_runner

    real_import = builtins.__import__

    def no_prefect_ray(name, *a, **kw):
        if name.startswith("prefect_ray"):
            raise ImportError("No module named 'prefect_ray'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_prefect_ray)
    with pytest.raises(TokenmillError, match=r"pip install 'tokenmill\[ray\]'"):
        task_runner(RunnerConfig(kind="ray"))
