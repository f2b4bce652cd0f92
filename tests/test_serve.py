"""`tokenmill serve` + deployments/prefect.yaml: a real Prefect server and worker on loopback.

The test starts `tokenmill serve` (server, work pool, deployments, worker), triggers the
pipeline deployment on tiny models, checks the run completed and its data is in the lake,
then stops serve by pid and checks that the server and worker are gone.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenmill.serve import stop_process
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie whose parent has not reaped it yet has stopped running too
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.fixture
def served(tmp_path):
    port = free_port()
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    out = tmp_path / "serve.out"
    proc = subprocess.Popen([str(BIN / "tokenmill"), "serve", "--port", str(port), "--home", str(home),
                             "--deployments", str(REPO / "deployments" / "prefect.yaml")],
                            stdout=out.open("w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 240
        while "ready" not in out.read_text() and time.time() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.5)
        text = out.read_text()
        assert "ready" in text, text
        pids = {name: int(pid) for name, pid in re.findall(r"(server|worker) (\d+)", text)}
        yield {"proc": proc, "port": port, "env": {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"},
               "pids": pids, "out": out}
    finally:
        stop_process(proc, 60, first=signal.SIGTERM)  # serve stops its worker and server itself


def prefect(args: list[str], env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_serve_deploys_every_flow_and_runs_the_pipeline_deployment_into_the_lake(served, tmp_path):
    env = served["env"]
    listed = prefect(["deployment", "ls"], env)
    assert listed.returncode == 0, listed.stderr
    for name in ("pipeline/nightly", "rollouts/rollouts", "label/label", "curate/curate", "train/train",
                 "efficacy/efficacy"):
        assert name in listed.stdout, listed.stdout
    nightly = prefect(["deployment", "inspect", "pipeline/nightly"], env).stdout
    assert "0 2 * * *" in nightly and "'work_pool_name': 'tokenmill'" in nightly

    lake = tmp_path / "lake"
    cfg = {"lake": str(lake), "run_id": "served-{date}", "prompts": 8, "sampling": {"n": 2, "max_tokens": 24},
           "labelers": ["rewards"], "eval": {"prompts": 8, "max_tokens": 24},
           "arms": [{"name": "sft", "recipe": "weighted-sft", "params": {"where": "verdict = 'correct'"},
                     "train": {"objective": "sft", "steps": 2, "batch": 4}}]}
    run = prefect(["deployment", "run", "pipeline/nightly", "--params", json.dumps({"cfg": cfg}),
                   "--watch", "--watch-timeout", "380"], env)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]

    # serve limits `model` (--model-slots 1): the run's model tasks took a slot of it
    tags = subprocess.run([sys.executable, "-c", "import json\nfrom prefect.client.orchestration import get_client\n"
                           "with get_client(sync_client=True) as c:\n"
                           "    runs = c.read_task_runs()\n"
                           "print(json.dumps([sorted({r.name.split()[0] for r in runs if t in r.tags}) for t in ('model',)]\n"
                           "                 + [sorted({r.name.split()[0] for r in runs if 'model' not in r.tags})]))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert tags.returncode == 0, tags.stderr
    tagged, untagged = json.loads(tags.stdout)
    assert {"generate", "prepare", "score", "rewards", "sft/dataset", "evaluate"} <= set(tagged) and "verify+commit" in untagged, tags.stdout

    run_id = time.strftime("served-%Y%m%d", time.gmtime())
    con = connect(Lake(lake))
    assert con.execute("SELECT count(*) FROM rollouts WHERE run_id = ?", [run_id]).fetchone()[0] == 16
    assert con.execute("SELECT count(DISTINCT arm) FROM model_eval WHERE run_id = ?", [run_id]).fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM model_eval WHERE run_id = ?", [run_id]).fetchone()[0] == 2  # base + sft

    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0
    assert set(served["pids"]) == {"server", "worker"}
    deadline = time.time() + 10
    while not all(gone(p) for p in served["pids"].values()) and time.time() < deadline:
        time.sleep(0.2)
    assert all(gone(p) for p in served["pids"].values()), served["pids"]


def test_serve_refuses_a_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([str(BIN / "tokenmill"), "serve", "--port", str(port), "--home", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"127.0.0.1:{port} is already in use" in out.stdout + out.stderr


def test_the_ui_on_a_non_default_port_talks_to_its_own_api(served):
    """A browser loads the dashboard from `serve --port N` and the UI's API calls reach N."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no chromium here: apt-get install chromium")
    port = served["port"]
    assert port != 4200
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            calls, answered = [], []
            page.on("request", lambda r: calls.append(r.url))
            page.on("response", lambda r: answered.append((r.url, r.status)))
            page.goto(f"http://127.0.0.1:{port}/dashboard", wait_until="networkidle", timeout=120_000)
            page.wait_for_timeout(2000)
            api = [u for u in calls if "/api/" in u]
            assert api and all(u.startswith(f"http://127.0.0.1:{port}/api/") for u in api), api[:10]
            assert any(u.startswith(f"http://127.0.0.1:{port}/api/") and status == 200 for u, status in answered)
            text = page.inner_text("body")
            assert "Can't connect" not in text and "cannot connect" not in text.lower(), text[:500]
        finally:
            browser.close()
