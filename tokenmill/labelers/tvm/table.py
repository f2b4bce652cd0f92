"""The lake table the TVM labeler writes (registered with the lake's schema on import)."""

from __future__ import annotations

import pyarrow as pa

from tokenmill.schema import TableSpec, register_table

_PROVENANCE = [pa.field(n, pa.string(), nullable=False)
               for n in ("labeler", "labeler_version", "models", "params", "config_id")]

TVM_TARGETS = register_table(
    TableSpec(
        name="tvm_targets",
        doc="Token-Supervised Value Model targets: per token, the share of correct rollouts (of the same prompt "
            "and model) among those sharing its prefix.",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema([
            pa.field("rollout_id", pa.string(), nullable=False),
            pa.field("pos", pa.int32(), nullable=False),
            pa.field("value", pa.float32(), nullable=False),  # mean outcome through the prefix y[≤pos]
            pa.field("paths", pa.int32(), nullable=False),  # rollouts through that prefix
            *_PROVENANCE,
        ]),
    )
)
