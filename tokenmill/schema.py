"""The pyarrow schema of every lake table, in one place.

Every table is hive-partitioned by `run_id` (the partition column lives in the path,
not inside the files) and carries `SCHEMA_VERSION` in each file's metadata. A table's
`key` is its primary key; `dedupe_on` is the column whose values a commit treats as
"already written" (committing the same rollout ids twice leaves one copy).

Later stages add their tables with `register_table`, so the lake and the DuckDB
catalog learn about them without further wiring.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = "1"
PARTITION_COLUMN = "run_id"
META_SCHEMA_VERSION = b"tokenmill.schema_version"
META_TABLE = b"tokenmill.table"


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    dedupe_on: str
    doc: str

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


TABLES: dict[str, TableSpec] = {}


def register_table(spec: TableSpec) -> TableSpec:
    for col in spec.key + (spec.dedupe_on,):
        if col not in spec.schema.names:
            raise ValueError(f"table {spec.name}: key column {col!r} not in schema")
    if PARTITION_COLUMN in spec.schema.names:
        raise ValueError(f"table {spec.name}: {PARTITION_COLUMN!r} is the partition column, not a file column")
    TABLES[spec.name] = spec
    return spec


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        from tokenmill.errors import LakeError

        raise LakeError(f"unknown table {name!r}", fix=f"known tables: {', '.join(sorted(TABLES))}") from None


_i32_list = pa.list_(pa.int32())
_f32_list = pa.list_(pa.float32())

PROMPTS = register_table(
    TableSpec(
        name="prompts",
        doc="One row per prompt of a run: its text, where it came from, and what a verifier needs.",
        key=("prompt_id",),
        dedupe_on="prompt_id",
        schema=pa.schema(
            [
                pa.field("prompt_id", pa.string(), nullable=False),
                pa.field("source", pa.string(), nullable=False),  # source name (world or file)
                pa.field("world", pa.string()),  # arithmetic|code|bios, null for plain files
                pa.field("split", pa.string()),  # train|test, null when the source has none
                pa.field("prompt", pa.string(), nullable=False),
                pa.field("reference", pa.string()),  # reference answer text, if any
                pa.field("meta", pa.string()),  # JSON: the world instance a verifier checks against
            ]
        ),
    )
)

ROLLOUTS = register_table(
    TableSpec(
        name="rollouts",
        doc="One row per generated sample: token ids, text, finish reason, verdict and reward.",
        key=("rollout_id",),
        dedupe_on="rollout_id",
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("prompt_id", pa.string(), nullable=False),
                pa.field("sample_index", pa.int32(), nullable=False),
                pa.field("source", pa.string()),
                pa.field("world", pa.string()),
                pa.field("model", pa.string(), nullable=False),  # model id (bundled name, hub id or path)
                pa.field("engine", pa.string(), nullable=False),  # hf|vllm
                pa.field("prompt_token_ids", _i32_list, nullable=False),
                pa.field("completion_token_ids", _i32_list, nullable=False),
                pa.field("completion", pa.string(), nullable=False),
                pa.field("num_tokens", pa.int32(), nullable=False),
                pa.field("finish_reason", pa.string(), nullable=False),  # stop|length
                pa.field("temperature", pa.float32(), nullable=False),
                pa.field("top_p", pa.float32(), nullable=False),
                pa.field("max_tokens", pa.int32(), nullable=False),
                pa.field("seed", pa.int64(), nullable=False),
                pa.field("sampling", pa.string(), nullable=False),  # JSON of all sampling params
                pa.field("logprobs_kind", pa.string(), nullable=False),  # raw|processed
                pa.field("reward", pa.float32()),
                pa.field("verdict", pa.string()),  # correct|incorrect|invalid|unverified
                pa.field("verifier", pa.string()),
                pa.field("verify_detail", pa.string()),  # JSON: what the verifier saw
                pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        ),
    )
)

TOKENS = register_table(
    TableSpec(
        name="tokens",
        doc="One row per generated token: id, raw logprob, entropy, top-k, character span.",
        key=("rollout_id", "pos"),
        dedupe_on="rollout_id",
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("token_id", pa.int32(), nullable=False),
                pa.field("logprob", pa.float32(), nullable=False),
                pa.field("entropy", pa.float32()),  # null where the engine cannot give it exactly
                pa.field("topk_ids", _i32_list),
                pa.field("topk_logprobs", _f32_list),
                pa.field("char_start", pa.int32(), nullable=False),  # into rollouts.completion
                pa.field("char_end", pa.int32(), nullable=False),
            ]
        ),
    )
)
