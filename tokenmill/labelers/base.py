"""What every labeler shares: provenance columns, config ids, and "shard done" markers.

A labeler is a small class with a `name`, a `version`, the model roles it needs scored
(`roles`), which of its labels need exact entropy (`needs_entropy`), an optional run-level
`prepare` step (critical trains its contrast models there) and `label_shard`, which reads
one rollouts shard from the lake and commits its rows. A new labeler is one subclass
declared as its family (`tokenmill/labelers/<family>/__init__.py`).

Idempotence has two layers: label rows dedupe on (rollout_id, config_id) in the lake,
and a finished (labeler config, shard) leaves a marker in staging so a re-run skips it
without recomputing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pyarrow as pa

from tokenmill import ids
from tokenmill.storage.lake import Lake, read_rollouts_shard  # noqa: F401  (re-exported for labelers)

_EMPTY = pa.table({"x": pa.array([], pa.int8())})


def config_id(labeler: str, version: str, models: dict, params: dict, kind: str = "") -> str:
    """The hash a label row is deduplicated on: same labeler (and output kind), models and
    parameters → same id."""
    return ids.content_id(labeler, kind, version, ids.canonical_json(models), ids.canonical_json(params))


def provenance(n: int, labeler: str, version: str, models: dict, params: dict, kind: str = "") -> dict[str, pa.Array]:
    """The provenance columns of `n` label rows."""
    cid = config_id(labeler, version, models, params, kind)
    values = (labeler, version, ids.canonical_json(models), ids.canonical_json(params), cid)
    names = ("labeler", "labeler_version", "models", "params", "config_id")
    return {k: pa.array(np.full(n, v, dtype=object), pa.string()) for k, v in zip(names, values)}


def entropy_needs(labelers: list["Labeler"]) -> list[str]:
    """The union of the labelers' `needs_entropy`: what of a label run needs exact entropy."""
    return [need for lab in labelers for need in lab.needs_entropy]


def shard_name(shard: str) -> str:
    return shard.rsplit("/", 1)[-1].removesuffix(".parquet")


def _marker(run_id: str, cid: str, shard: str) -> str:
    return f"runs/{run_id}/labels/{cid}/{shard_name(shard)}.done.parquet"


def is_done(lake: Lake, run_id: str, cid: str, shard: str) -> bool:
    return lake.exists(f"_staging/{_marker(run_id, cid, shard)}")


def mark_done(lake: Lake, run_id: str, cid: str, shard: str) -> None:
    lake.write_scratch(_marker(run_id, cid, shard), _EMPTY)


class Labeler(ABC):
    name: str = ""
    version: str = "1"

    def roles(self) -> dict[str, str]:
        """Model roles (role → model) whose `scores` the labeler reads."""
        return {}

    @property
    def needs_entropy(self) -> list[str]:
        """The labels of this configuration that need each token's exact entropy under its
        policy (read from `tokens` where generation gave it, else from the policy's
        `scores`), e.g. ["rewards kind 'entropy'"]; empty when none does. The label flow asks
        the score stage for entropy only then, and refuses an engine that cannot give it
        before any work."""
        return []

    def without_entropy(self) -> str | None:
        """Command-line options that keep this labeler's other labels but need no entropy
        (for the refusal's fix), or None."""
        return None

    def prepare(self, lake: Lake, run_id: str) -> dict:
        """Run-level work before the shards (e.g. training models); returns a summary."""
        return {}

    @abstractmethod
    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        """Label one rollouts shard; returns rows written per output."""
