"""The lake table the process labeler writes (registered with the lake's schema on import)."""

from __future__ import annotations

import pyarrow as pa

from tokenmill.schema import TableSpec, register_table

_PROVENANCE = [pa.field(n, pa.string(), nullable=False)
               for n in ("labeler", "labeler_version", "models", "params", "config_id")]

PROCESS_LABELS = register_table(
    TableSpec(
        name="process_labels",
        doc="Process truth from a world's step checker: per token, whether it is the first wrong token of its "
            "rollout and whether every step before it is right.",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema([
            pa.field("rollout_id", pa.string(), nullable=False),
            pa.field("pos", pa.int32(), nullable=False),
            pa.field("first_error", pa.bool_(), nullable=False),  # the token holding the first error's first character
            pa.field("before_error", pa.bool_(), nullable=False),  # ends before the first error (all tokens: no error)
            pa.field("step", pa.int32(), nullable=False),  # the first error's step (0-based; len(steps): the answer; -1: none)
            *_PROVENANCE,
        ]),
    )
)
