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
