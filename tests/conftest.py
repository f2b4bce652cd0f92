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
os.environ.setdefault("TOKENMILL_SCRATCH", str(Path(__file__).resolve().parent.parent / ".scratch"))

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
    from tokenmill.tasks.labels.routing import RoutingLabeler

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
    from tokenmill.tasks.labels.hallucination import HallucinationLabeler

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
    import numpy as np
    import pyarrow as pa

    from tokenmill.schema import CRITICAL, TOKEN_REWARDS
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks.labels.base import provenance

    lake = Lake(str(copy_lake))
    tokens = lake.read("tokens", "r1", columns=["rollout_id", "pos", "token_id"])
    rollouts = lake.read("rollouts", "r1", columns=["rollout_id", "verdict"])
    bad = {r["rollout_id"] for r in rollouts.to_pylist() if r["verdict"] == "incorrect"}
    t = tokens.filter(pa.compute.is_in(tokens.column("rollout_id"), value_set=pa.array(sorted(bad))))
    n = t.num_rows
    pos = t.column("pos").to_numpy()
    lake.commit("critical", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "token_id": t.column("token_id"),
        "p_ce": pa.array(1 - pos / 10, pa.float32()), "weight": pa.array(pos / 10, pa.float32()),
        "rank": pa.array(np.ones(n), pa.int32()), "is_critical": pa.array(np.zeros(n, bool)),
        "pos_model": ["p"] * n, "neg_model": ["n"] * n, "beta": pa.array(np.ones(n), pa.float32()),
        **provenance(n, "critical", "1", {}, {}),
    }, schema=CRITICAL.schema))
    m = tokens.num_rows
    lake.commit("token_rewards", "r1", pa.table({
        "rollout_id": tokens.column("rollout_id"), "pos": tokens.column("pos"), "kind": ["grpo"] * m,
        "value": pa.array(np.full(m, 0.5), pa.float32()), "flag": pa.nulls(m, pa.bool_()),
        **provenance(m, "rewards", "1", {}, {}, "grpo"),
    }, schema=TOKEN_REWARDS.schema))
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
    from tokenmill.tasks.labels.base import config_id, provenance

    t = lake.read("tokens", "r1", columns=["rollout_id", "pos"])
    n = t.num_rows
    lake.commit("token_rewards", "r1", pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "kind": ["dpo"] * n,
        "value": pa.array(scale * t.column("pos").to_numpy(), pa.float32()), "flag": pa.nulls(n, pa.bool_()),
        **provenance(n, "rewards", "2", {}, {}, "dpo"),
    }, schema=TOKEN_REWARDS.schema))
    return config_id("rewards", "2", {}, {}, "dpo")
