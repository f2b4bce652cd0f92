"""Trained models in the lake: files under `_artifacts/<kind>/<id>/`, a `model_artifacts`
row with lineage. Artifact ids hash their inputs, so a finished artifact is reused."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa

from tokenmill import ids
from tokenmill.schema import MODEL_ARTIFACTS
from tokenmill.errors import EngineError
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake

CACHE = tempfile.gettempdir() + "/tokenmill-artifacts"


def store_artifact(lake: Lake, run_id: str, rel: str, save: Callable[[str], None], *, artifact_id: str, role: str,
                   base_model: str, train_rollouts: int, train_tokens: int, steps: int, final_loss: float | None,
                   lineage: dict, rows: dict[str, pa.Table] | None = None) -> None:
    """`save(tmpdir)` writes the files; they are copied into the lake, a `model_artifacts` row
    records what produced them, `rows` (table → rows, e.g. its `train_metrics`) are
    committed, and only then the DONE marker is written. A re-run reuses an artifact with
    DONE, so everything that belongs to it must be in the lake before: a crash before DONE
    means a re-run trains again and its commits add what is missing (they dedupe)."""
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        lake.put_dir(tmp, rel, done=False)
    lake.commit("model_artifacts", run_id, pa.table({
        "artifact_id": [artifact_id], "role": [role], "base_model": [base_model], "path": [rel],
        "train_rollouts": pa.array([train_rollouts], pa.int32()), "train_tokens": pa.array([train_tokens], pa.int64()),
        "steps": pa.array([steps], pa.int32()), "final_loss": pa.array([final_loss], pa.float32()),
        "lineage": [ids.canonical_json(lineage)], "created_at": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC")),
    }, schema=MODEL_ARTIFACTS.schema))
    for table, data in (rows or {}).items():
        lake.commit(table, run_id, data)
    lake.mark_dir_done(rel)


def artifact_path(lake: Lake, rel: str) -> str:
    """A local directory holding the artifact's files."""
    return lake.local_dir(rel, cache=CACHE)


def model_source(lake: Lake, model: str) -> str:
    """What loads `model`. A model trained into the lake is named by its lake path
    (`_artifacts/models/<id>`): that name stays the same wherever the lake is mounted, so
    label config ids and `scores.model_id` do too; it loads from the artifact's local copy.
    Anything else loads as given."""
    if not model.startswith(ARTIFACTS_DIR + "/"):
        return model
    if not lake.has_dir(model):
        raise EngineError(f"no finished model artifact {model!r} in the lake", where=lake.uri,
                          fix="train it first, or name a bundled model, a local directory or a hub id")
    return artifact_path(lake, model)
