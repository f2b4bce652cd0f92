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
