"""Shared fixtures: an isolated Prefect home, the bundled tiny models, small worlds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports prefect: keep runs out of ~/.prefect and quiet.
_PREFECT_HOME = tempfile.mkdtemp(prefix="tokenmill-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
# Ray reads these when first imported (vLLM may import it during collection): keep every
# test cluster on loopback and quiet
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENMILL_SCRATCH", str(Path(__file__).resolve().parent.parent / ".scratch"))
# packaged real models (smollm2-135m) convert once into the checkout's scratch space
os.environ.setdefault("TOKENMILL_MODEL_CACHE", str(Path(__file__).resolve().parent.parent / ".scratch" / "models"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (temporary server) shared by every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def hf_small():
    from tokenmill.engines import get_engine

    return get_engine("hf", "tiny-small")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted from its wheel (once per cache; ~25 s the first time)."""
    from tokenmill.models.registry import resolve_model

    return Path(resolve_model("smollm2-135m").path)


@pytest.fixture
def lake_dir(tmp_path) -> Path:
    return tmp_path / "lake"


def make_run(lake_uri: str, run_id: str = "r1", models=("tiny-small",), n_prompts: int = 8, samples: int = 4,
             max_tokens: int = 48, world: str = "arithmetic", seed: int = 1, temperature: float = 1.0,
             split: str = "test") -> str:
    """A real run through the plain stage functions (no Prefect): prompts, rollouts, tokens."""
    from tokenmill.config import SourceConfig
    from tokenmill.engines import SamplingParams
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks import generate, prompts, verify

    lake = Lake(lake_uri)
    params = SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    for shard in prompts.load_and_shard(lake, run_id, [SourceConfig(world=world, n=n_prompts, seed=seed, split=split)], 64):
        for model in models:
            out = generate.generate_shard(lake, run_id, shard, "hf", model, params)
            verify.verify_and_commit(lake, run_id, shard, out)
    return run_id


@pytest.fixture(scope="session")
def arith_lake(tmp_path_factory) -> Path:
    """A read-only lake with one arithmetic run `r1` of tiny-small: 8 prompts × 4 samples.
    Tests that write copy it first (`copy_lake`)."""
    path = tmp_path_factory.mktemp("arith") / "lake"
    make_run(str(path))
    return path


@pytest.fixture
def copy_lake(arith_lake, tmp_path) -> Path:
    import shutil

    dest = tmp_path / "lake"
    shutil.copytree(arith_lake, dest)
    return dest


@pytest.fixture(scope="session")
def route_lake(tmp_path_factory) -> Path:
    """A read-only lake with run `g`: tiny-large greedy on 256 arithmetic training prompts,
    labelled by the routing labeler against tiny-small (outcome verifier)."""
    from tokenmill.storage.lake import Lake
    from tokenmill.labelers.routing.labeler import RoutingLabeler

    path = tmp_path_factory.mktemp("route") / "lake"
    make_run(str(path), run_id="g", models=("tiny-large",), n_prompts=256, samples=1, max_tokens=96, temperature=0.0,
             split="train")
    lake, labeler = Lake(str(path)), RoutingLabeler()
    labeler.prepare(lake, "g")
    for shard in lake.files("rollouts", "g"):
        labeler.label_shard(lake, "g", shard)
    return path


@pytest.fixture(scope="session")
def bios_lake(tmp_path_factory) -> Path:
    """A read-only lake with run `b`: tiny-small on 24 bios prompts (known and unknown
    people) × 4 samples, labelled by the hallucination labeler (KB ground truth)."""
    from tokenmill.storage.lake import Lake
    from tokenmill.labelers.hallucination.labeler import HallucinationLabeler

    path = tmp_path_factory.mktemp("bios") / "lake"
    make_run(str(path), run_id="b", n_prompts=24, samples=4, max_tokens=60, world="bios", split="all")
    lake, labeler = Lake(str(path)), HallucinationLabeler()
    for shard in lake.files("rollouts", "b"):
        labeler.label_shard(lake, "b", shard)
    return path


@pytest.fixture
def labelled(copy_lake):
    """The arith lake with hand-written `critical` rows (weight = pos / 10) on incorrect
    rollouts and a `grpo` token reward of 0.5 everywhere."""
    from tokenmill.storage.lake import Lake
    from tokenmill.testing import write_hand_labels

    lake = Lake(str(copy_lake))
    write_hand_labels(lake, "r1")
    return lake


@pytest.fixture
def add_dpo_rewards():
    """A function writing hand-made `dpo` token rewards r̂ = scale · pos on every token of run
    r1; it returns their config id."""
    return _dpo_rewards


def _dpo_rewards(lake, scale):
    """Hand-written `dpo` token rewards: r̂ = scale · pos on every token of run r1."""
    import numpy as np
    import pyarrow as pa

    from tokenmill.schema import TOKEN_REWARDS
    from tokenmill.labelers.base import config_id, provenance

    t = lake.read("tokens", "r1", columns=["rollout_id", "pos"])
    n = t.num_rows
    lake.commit("token_rewards", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "kind": ["dpo"] * n,
        "value": pa.array(scale * t.column("pos").to_numpy(), pa.float32()), "flag": pa.nulls(n, pa.bool_()),
        **provenance(n, "rewards", "2", {}, {}, "dpo"),
    }, schema=TOKEN_REWARDS.schema))
    return config_id("rewards", "2", {}, {}, "dpo")


# ------------------------------------------------------------------ object storage, subprocesses


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, grace: float = 5.0) -> None:
    """Stop a subprocess started in its own session (`start_new_session=True`) by its id:
    its process group gets SIGTERM, then SIGKILL if it has not exited after `grace` s."""
    import signal

    from tokenmill.serve import stop_process as stop

    stop(proc, grace, first=signal.SIGTERM)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A real S3-compatible server (moto's server mode) on loopback: "127.0.0.1:PORT".

    Credentials come from the environment (AWS_ACCESS_KEY_ID/SECRET=testing); they are set
    here for this process, and subprocesses inherit them."""
    import subprocess
    import sys
    import time
    import urllib.request

    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on port {port}: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_lake_uri(endpoint: str, bucket: str, prefix: str = "lake") -> str:
    """The lake URI of `s3://bucket/prefix` on the moto server (pyarrow's S3 URI options)."""
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


@pytest.fixture
def s3_lake(moto_endpoint) -> str:
    """The URI of a lake in a fresh, empty bucket on the moto server."""
    import uuid

    import boto3

    bucket = f"tm-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=f"http://{moto_endpoint}", region_name="us-east-1").create_bucket(Bucket=bucket)
    return s3_lake_uri(moto_endpoint, bucket)


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    """The API URL of the session's Prefect server, for `tokenmill` subprocesses: pointing
    them at it saves each one starting its own ephemeral server (~25 s on 2 cores)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def tokenmill_env(prefect_api_url: str) -> dict[str, str]:
    """The environment of a `tokenmill` subprocess in tests: the session's Prefect API, and
    one torch/OpenMP thread unless told otherwise. Several processes on few cores with a
    thread per core each run slower than one after the other (measured: two pipelines side
    by side on 2 cores, 65 s with default threads, 31 s with one)."""
    return {"OMP_NUM_THREADS": "1", **os.environ, "PREFECT_API_URL": prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING", "COLUMNS": "200"}


@pytest.fixture
def spawn(prefect_api_url, tmp_path):
    """Start `tokenmill …` subprocesses in their own process groups, against the session's
    Prefect API; every one still running at teardown is stopped by its pid, pass or fail."""
    import subprocess
    import sys

    procs = []
    n = [0]

    def start(*args: str, env: dict | None = None) -> subprocess.Popen:
        n[0] += 1
        log = tmp_path / f"tokenmill-{n[0]}.log"
        full_env = {**tokenmill_env(prefect_api_url), **(env or {})}
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("tokenmill")), *args], stdout=fh,
                                    stderr=subprocess.STDOUT, env=full_env, start_new_session=True, cwd=tmp_path)
        proc.log = log
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


def visible_files(lake: Path, table: str) -> list[Path]:
    """The files DuckDB's glob `<table>/run_id=*/[!._]*.parquet` picks up in a local lake."""
    return sorted(f for f in (Path(lake) / table).glob("run_id=*/*.parquet") if not f.name.startswith((".", "_")))


def lake_state(lake: Path) -> dict[str, dict]:
    """{table: {rows, keys}} of every table with data in a local lake, after checking that it
    is consistent: each visible file reads whole, DuckDB sees exactly the files' rows, no
    primary key repeats, and no dedupe key is in two files (no commit was written twice)."""
    import pyarrow.parquet as pq

    from tokenmill import schema as S
    from tokenmill.storage.catalog import connect
    from tokenmill.storage.lake import Lake

    con = connect(Lake(str(lake)))
    state = {}
    try:
        for name, spec in sorted(S.TABLES.items()):
            file_rows, owner = 0, {}
            for f in visible_files(lake, name):
                data = pq.read_table(f)  # raises on a partial or corrupt file
                file_rows += data.num_rows
                run = f.parent.name
                for key in set(zip(*(data.column(c).to_pylist() for c in spec.dedupe_cols))):
                    assert (run, key) not in owner, f"{name}: dedupe key {key} in {owner.get((run, key))} and {f.name}"
                    owner[(run, key)] = f.name
            seen = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            assert seen == file_rows, f"{name}: DuckDB sees {seen} rows, the committed files hold {file_rows}"
            cols = ", ".join(spec.key + (S.PARTITION_COLUMN,))
            dups = con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM {name} GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
            assert dups == 0, f"{name}: {dups} duplicate keys ({cols})"
            if seen:
                state[name] = {"rows": seen, "keys": sorted(map(str, owner))}
    finally:
        con.close()
    return state


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory, prefect_api_url) -> Path:
    """A read-only lake made by the real `tokenmill demo`, small: run `demo` (both tiny
    models × 3 worlds × 8 prompts × 2 samples, with rewards, critical, hallucination and
    AST labels) and run `demo-route` (routing labels). Every label family the viewer shows."""
    import subprocess
    import sys

    path = tmp_path_factory.mktemp("demo") / "lake"
    log = path.parent / "demo.log"
    with open(log, "wb") as fh:
        proc = subprocess.run([str(Path(sys.executable).with_name("tokenmill")), "demo", "--lake", str(path),
                               "--prompts", "8", "--samples", "2", "--route-prompts", "24",
                               "--real-prompts", "0", "--train-steps", "2", "--eval-prompts", "8"],  # the tiny runs only (test_cli runs the real stage)
                              stdout=fh, stderr=subprocess.STDOUT, env=tokenmill_env(prefect_api_url), timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return path
