"""The pyarrow schema of every lake table, in one place.

Every table is hive-partitioned by `run_id` (the partition column lives in the path,
not inside the files) and carries `SCHEMA_VERSION` in each file's metadata. A table's
`key` is its primary key; `dedupe_on` is the column (or columns, taken together) whose
values a commit treats as "already written" (committing the same rollout ids twice
leaves one copy). Label tables dedupe on (`rollout_id`, `config_id`): `config_id` hashes
the labeler, its version, models and parameters, so a re-label with other parameters adds
rows and the same labelling twice does not.

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
    dedupe_on: str | tuple[str, ...]
    doc: str

    @property
    def dedupe_cols(self) -> tuple[str, ...]:
        return (self.dedupe_on,) if isinstance(self.dedupe_on, str) else tuple(self.dedupe_on)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


TABLES: dict[str, TableSpec] = {}


def register_table(spec: TableSpec) -> TableSpec:
    for col in spec.key + spec.dedupe_cols:
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
                # JSON: how the prompt was rendered (chat template hash, system prompt);
                # null when the raw prompt text went in (models/chat.py)
                pa.field("prompt_format", pa.string()),
                pa.field("reward", pa.float32()),
                pa.field("verdict", pa.string()),  # correct|incorrect|invalid|unverified
                pa.field("verifier", pa.string()),
                pa.field("verify_detail", pa.string()),  # JSON: what the verifier saw
                pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        ),
    )
)

PASS_AT_K = register_table(
    TableSpec(
        name="pass_at_k",
        doc="pass@k per source and model (the unbiased estimator of Chen et al. 2021) over the run's verified rollouts.",
        # a run's rollouts only grow, so their count tells one computation from a later one
        key=("source", "model", "k", "rollouts"),
        dedupe_on=("source", "model", "k", "rollouts"),
        schema=pa.schema(
            [
                pa.field("source", pa.string(), nullable=False),
                pa.field("model", pa.string(), nullable=False),
                pa.field("verifier", pa.string()),  # one name, or several joined by ','
                pa.field("k", pa.int32(), nullable=False),
                pa.field("pass_at_k", pa.float64(), nullable=False),  # mean over problems
                pa.field("problems", pa.int32(), nullable=False),
                pa.field("samples", pa.int32(), nullable=False),  # fewest verified samples of a problem (≥ k)
                pa.field("rollouts", pa.int32(), nullable=False),  # verified rollouts behind the figure
                pa.field("correct", pa.int32(), nullable=False),
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

# ------------------------------------------------------------------ scoring and labels
# Every label row records what produced it: `labeler`, `labeler_version`, the models
# involved and the parameters that matter (JSON), hashed together into `config_id`.
_provenance = [
    pa.field("labeler", pa.string(), nullable=False),
    pa.field("labeler_version", pa.string(), nullable=False),
    pa.field("models", pa.string(), nullable=False),  # JSON: role -> model id
    pa.field("params", pa.string(), nullable=False),  # JSON of the parameters that matter
    pa.field("config_id", pa.string(), nullable=False),  # hash of labeler, version, models, params
]

SCORES = register_table(
    TableSpec(
        name="scores",
        doc="Teacher-forced statistics of each generated token under a named model (policy, ref, pos, neg, …).",
        # a role may be filled by another model later (`--model ref=…`): both are kept, and
        # readers pick the role's rows of the model they were asked for
        key=("rollout_id", "pos", "model", "model_id"),
        dedupe_on=("rollout_id", "model", "model_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("model", pa.string(), nullable=False),  # the role name given to `score`
                pa.field("model_id", pa.string(), nullable=False),  # what was loaded for that role
                pa.field("token_id", pa.int32(), nullable=False),
                pa.field("logprob", pa.float32(), nullable=False),  # raw: full-vocabulary log-softmax
                pa.field("entropy", pa.float32()),  # null where the engine cannot give it exactly
                pa.field("top1_id", pa.int32(), nullable=False),
                pa.field("topk_ids", _i32_list),
                pa.field("topk_logprobs", _f32_list),
            ]
        ),
    )
)

HIDDEN_STATES = register_table(
    TableSpec(
        name="hidden_states",
        doc="Hidden state of one layer at each generated token (float16), kept out of `scores`.",
        # as in `scores`: a role refilled by another model keeps both (model_id tells them apart)
        key=("rollout_id", "pos", "model", "model_id", "layer"),
        dedupe_on=("rollout_id", "model", "model_id", "layer"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("model", pa.string(), nullable=False),
                pa.field("model_id", pa.string(), nullable=False),
                pa.field("layer", pa.int32(), nullable=False),  # index into hidden_states (0 = embeddings)
                pa.field("hidden", pa.list_(pa.float16()), nullable=False),
            ]
        ),
    )
)

TOKEN_REWARDS = register_table(
    TableSpec(
        name="token_rewards",
        doc="Per-token rewards and advantages (dpo, grpo, tempo, d3s, entropy, rlpr), one row per token and kind.",
        key=("rollout_id", "pos", "kind", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("kind", pa.string(), nullable=False),
                pa.field("value", pa.float32()),  # null where the kind is undefined (e.g. rlpr without a reference)
                pa.field("flag", pa.bool_()),  # d3s: kept; entropy: high-window; null for other kinds
                *_provenance,
            ]
        ),
    )
)

CRITICAL = register_table(
    TableSpec(
        name="critical",
        doc="Critical tokens by contrastive estimation (cDPO): p_CE of each token and its weight 1 - p_CE.",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("token_id", pa.int32(), nullable=False),
                pa.field("p_ce", pa.float32(), nullable=False),
                pa.field("weight", pa.float32(), nullable=False),  # 1 - p_ce
                pa.field("rank", pa.int32(), nullable=False),  # 1 = lowest p_ce of its rollout
                pa.field("is_critical", pa.bool_(), nullable=False),
                pa.field("pos_model", pa.string(), nullable=False),
                pa.field("neg_model", pa.string(), nullable=False),
                pa.field("beta", pa.float32(), nullable=False),
                *_provenance,
            ]
        ),
    )
)

CRITICAL_TRUTH = register_table(
    TableSpec(
        name="critical_truth",
        doc="Rollout-based ground truth for critical tokens: success rates of continuations with the token kept vs replaced, and the critical token.",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("token_id", pa.int32(), nullable=False),
                pa.field("alt_token_id", pa.int32()),  # replace-top1: the one alternative; null for the paper's draws
                pa.field("k", pa.int32(), nullable=False),  # continuations of the kept prefix
                pa.field("kept_success", pa.float32(), nullable=False),
                pa.field("replaced_success", pa.float32(), nullable=False),  # paper: over the drawn alternatives
                pa.field("is_critical", pa.bool_(), nullable=False),  # paper: the first all-failing kept prefix; replace-top1: gain >= margin
                *_provenance,
            ]
        ),
    )
)

ROUTING = register_table(
    TableSpec(
        name="routing",
        doc="R2R routing labels of a large model's trajectory: 0 identical (small model's argmax agrees), "
            "1 neutral mismatch, 2 divergent mismatch (the large model should take this token).",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("label", pa.int8(), nullable=False),  # 0 identical, 1 neutral, 2 divergent
                pa.field("large_token_id", pa.int32(), nullable=False),  # the trajectory's token
                pa.field("small_token_id", pa.int32(), nullable=False),  # the small model's argmax
                pa.field("is_mismatch", pa.bool_(), nullable=False),  # differ, and neither is a special token
                pa.field("small_continuation", pa.string()),  # mismatches only: prefix + small token, continued
                pa.field("large_continuation", pa.string()),  # mismatches only: the trajectory, same stop rule
                pa.field("verifier", pa.string(), nullable=False),  # outcome | judge
                pa.field("verdict", pa.int8()),  # judge: 0/1, -1 unparsable; outcome: 1 if the outcome changed
                pa.field("verdict_raw", pa.string()),  # judge: its reply; outcome: the two rewards
                pa.field("small_model", pa.string(), nullable=False),
                pa.field("large_model", pa.string(), nullable=False),
                *_provenance,
            ]
        ),
    )
)

HALLUCINATION_SPANS = register_table(
    TableSpec(
        name="hallucination_spans",
        doc="Entity spans of completions with their token range, ground-truth label and uncertainty scores.",
        key=("rollout_id", "span_id", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("span_id", pa.int32(), nullable=False),  # index within the rollout, by char_start
                pa.field("start_pos", pa.int32(), nullable=False),  # first token overlapping the span
                pa.field("end_pos", pa.int32(), nullable=False),  # last one (inclusive)
                pa.field("char_start", pa.int32(), nullable=False),  # into rollouts.completion
                pa.field("char_end", pa.int32(), nullable=False),  # exclusive
                pa.field("text", pa.string(), nullable=False),
                pa.field("entity_type", pa.string(), nullable=False),  # birth_year, city, …, number, date, name, title
                pa.field("label", pa.string()),  # supported | not_supported | unverifiable; null: no annotator
                pa.field("min_prob", pa.float32()),
                pa.field("mean_prob", pa.float32()),
                pa.field("mean_entropy", pa.float32()),
                pa.field("ccp", pa.float32()),  # claim-conditioned probability (higher = surer)
                pa.field("consistency", pa.float32()),  # share of other samples stating the same value
                pa.field("extractor", pa.string(), nullable=False),
                pa.field("annotator", pa.string()),
                pa.field("model", pa.string(), nullable=False),  # the rollout's model (whose statistics these are)
                *_provenance,
            ]
        ),
    )
)

PROBE_EVAL = register_table(
    TableSpec(
        name="probe_eval",
        doc="Held-out ROC AUC of a hallucination probe next to the uncertainty scores, per span and per token.",
        key=("probe_id", "level", "method"),
        dedupe_on="probe_id",
        schema=pa.schema(
            [
                pa.field("probe_id", pa.string(), nullable=False),
                pa.field("model", pa.string(), nullable=False),
                pa.field("layer", pa.int32(), nullable=False),
                pa.field("level", pa.string(), nullable=False),  # span | token
                pa.field("method", pa.string(), nullable=False),  # probe, 1 - min_prob, …
                pa.field("auc", pa.float32()),  # null when a class is missing
                pa.field("positives", pa.int32(), nullable=False),
                pa.field("negatives", pa.int32(), nullable=False),
            ]
        ),
    )
)

AST_FILES = register_table(
    TableSpec(
        name="ast_files",
        doc="Parsed code files (rollout code blocks or source trees): language, node, error and missing counts, "
            "names, source.",
        key=("file_id",),
        dedupe_on="file_id",
        schema=pa.schema(
            [
                pa.field("file_id", pa.string(), nullable=False),
                pa.field("rollout_id", pa.string()),  # code from a rollout (else null)
                pa.field("block", pa.int32()),  # index of the code block in the completion
                pa.field("char_start", pa.int32()),  # where the block's code starts in the completion
                pa.field("path", pa.string()),  # a source-tree file (else null)
                pa.field("language", pa.string()),  # normalised: python, java, …, c_sharp (null when skipped)
                pa.field("bytes", pa.int64(), nullable=False),
                pa.field("nodes", pa.int32(), nullable=False),
                pa.field("errors", pa.int32(), nullable=False),  # ERROR nodes: counted, not assumed 0
                pa.field("missing", pa.int32(), nullable=False),  # MISSING nodes the parser inserted
                pa.field("source_hash", pa.string()),
                pa.field("functions", pa.list_(pa.string()), nullable=False),
                pa.field("classes", pa.list_(pa.string()), nullable=False),
                pa.field("imports", pa.list_(pa.string()), nullable=False),
                pa.field("skipped", pa.string()),  # why a file was not parsed (binary, unreadable, …)
                pa.field("source", pa.string()),  # the parsed code; node text = UTF-8 bytes [start_byte, end_byte)
            ]
        ),
    )
)

AST_NODES = register_table(
    TableSpec(
        name="ast_nodes",
        doc="Every node of every parsed file in the universal AST schema (MLCPD categories).",
        key=("file_id", "node_id"),
        dedupe_on="file_id",
        schema=pa.schema(
            [
                pa.field("file_id", pa.string(), nullable=False),
                pa.field("node_id", pa.int32(), nullable=False),  # pre-order index
                pa.field("parent_id", pa.int32(), nullable=False),  # −1 at the root
                pa.field("depth", pa.int32(), nullable=False),
                pa.field("type", pa.string(), nullable=False),  # tree-sitter node type
                pa.field("category", pa.string(), nullable=False),  # universal category
                pa.field("is_named", pa.bool_(), nullable=False),
                pa.field("is_error", pa.bool_(), nullable=False),
                pa.field("is_missing", pa.bool_(), nullable=False),
                pa.field("field_name", pa.string()),
                pa.field("start_byte", pa.int64(), nullable=False),
                pa.field("end_byte", pa.int64(), nullable=False),
                pa.field("start_row", pa.int32(), nullable=False),
                pa.field("start_col", pa.int32(), nullable=False),  # byte column, as tree-sitter counts
                pa.field("end_row", pa.int32(), nullable=False),
                pa.field("end_col", pa.int32(), nullable=False),
            ]
        ),
    )
)

AST_TOKENS = register_table(
    TableSpec(
        name="ast_tokens",
        doc="Each generated token inside code: the innermost named AST node it starts in.",
        key=("rollout_id", "pos", "config_id"),
        dedupe_on=("rollout_id", "config_id"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("file_id", pa.string(), nullable=False),
                pa.field("node_id", pa.int32(), nullable=False),  # −1: no named node covers the token
                pa.field("type", pa.string()),
                pa.field("category", pa.string()),
                pa.field("depth", pa.int32()),
                *_provenance,
            ]
        ),
    )
)

TRAIN_METRICS = register_table(
    TableSpec(
        name="train_metrics",
        doc="Metrics logged by the token-weighted trainers, one row per logged step.",
        key=("artifact_id", "step"),
        dedupe_on="artifact_id",
        schema=pa.schema(
            [
                pa.field("artifact_id", pa.string(), nullable=False),  # the model being trained
                pa.field("dataset_id", pa.string(), nullable=False),
                pa.field("objective", pa.string(), nullable=False),  # sft | dpo | tdpo
                pa.field("step", pa.int32(), nullable=False),
                pa.field("loss", pa.float32(), nullable=False),
                pa.field("lr", pa.float32(), nullable=False),
                pa.field("tokens", pa.int64(), nullable=False),  # loss tokens seen so far
                pa.field("seconds", pa.float32(), nullable=False),
                pa.field("margin", pa.float32()),  # dpo: mean weighted reward margin
            ]
        ),
    )
)

ROUTER_FEATURES = register_table(
    TableSpec(
        name="router_features",
        doc="The small model's view when it predicts each token of a trajectory (R2R router inputs), float16.",
        key=("rollout_id", "pos", "model"),
        dedupe_on=("rollout_id", "model"),
        schema=pa.schema(
            [
                pa.field("rollout_id", pa.string(), nullable=False),
                pa.field("pos", pa.int32(), nullable=False),
                pa.field("model", pa.string(), nullable=False),  # the small model
                pa.field("pred_id", pa.int32(), nullable=False),  # its argmax
                pa.field("state", pa.list_(pa.float16()), nullable=False),  # final normalised state (LM head input)
                pa.field("top_logits", pa.list_(pa.float16()), nullable=False),  # top-k raw logits, descending
            ]
        ),
    )
)

ROUTING_EVAL = register_table(
    TableSpec(
        name="routing_eval",
        doc="Routed generation (small model, large model on the router's tokens) against small-only, "
            "large-only and random routing: accuracy vs share of large-model tokens.",
        key=("eval_id", "policy", "threshold"),
        dedupe_on="eval_id",
        schema=pa.schema(
            [
                pa.field("eval_id", pa.string(), nullable=False),
                pa.field("router_id", pa.string(), nullable=False),
                pa.field("policy", pa.string(), nullable=False),  # small-only | large-only | router | random
                pa.field("threshold", pa.float32()),  # router: τ; random: the probability of routing
                pa.field("large_share", pa.float32(), nullable=False),  # large-model tokens / generated tokens
                pa.field("accuracy", pa.float32(), nullable=False),
                pa.field("prompts", pa.int32(), nullable=False),
                pa.field("tokens", pa.int64(), nullable=False),
                pa.field("world", pa.string(), nullable=False),
                pa.field("split", pa.string(), nullable=False),
                pa.field("small_model", pa.string(), nullable=False),
                pa.field("large_model", pa.string(), nullable=False),
                pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        ),
    )
)

MODEL_ARTIFACTS = register_table(
    TableSpec(
        name="model_artifacts",
        doc="Models trained by tokenmill (e.g. cDPO's pos/neg), with their lineage.",
        key=("artifact_id",),
        dedupe_on="artifact_id",
        schema=pa.schema(
            [
                pa.field("artifact_id", pa.string(), nullable=False),
                pa.field("role", pa.string(), nullable=False),  # pos | neg | …
                pa.field("base_model", pa.string(), nullable=False),
                pa.field("path", pa.string(), nullable=False),  # relative to the lake root
                pa.field("train_rollouts", pa.int32(), nullable=False),
                pa.field("train_tokens", pa.int64(), nullable=False),
                pa.field("steps", pa.int32(), nullable=False),
                pa.field("final_loss", pa.float32()),
                pa.field("lineage", pa.string(), nullable=False),  # JSON: data hash, rollout filter, recipe, code version
                pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        ),
    )
)


# Derived views the catalog creates over the tables (name → SQL).
MODEL_EVAL = register_table(
    TableSpec(
        name="model_eval",
        doc="Greedy held-out accuracy of a model (a base model or a trained artifact) on one world and split.",
        key=("eval_id",),
        dedupe_on="eval_id",
        schema=pa.schema(
            [
                pa.field("eval_id", pa.string(), nullable=False),  # hash of model, world, split, prompts, settings
                pa.field("model", pa.string(), nullable=False),  # base model name or artifact id
                pa.field("arm", pa.string()),  # the pipeline arm that trained it; null for a base model
                pa.field("world", pa.string(), nullable=False),
                pa.field("split", pa.string(), nullable=False),
                pa.field("prompts", pa.int32(), nullable=False),
                pa.field("accuracy", pa.float32(), nullable=False),
                pa.field("mean_reward", pa.float32(), nullable=False),
                pa.field("seconds", pa.float32(), nullable=False),
            ]
        ),
    )
)

VIEWS: dict[str, str] = {
    # the probes' training format: each token of a labelled rollout → 1 inside a not-supported
    # span, 0 inside a supported one (not-supported wins on overlap), −100 elsewhere
    "hallucination_tokens": """
        SELECT t.run_id, t.rollout_id, t.pos, t.token_id, exp(t.logprob) AS prob, t.entropy, l.config_id,
               coalesce(max(CASE s.label WHEN 'not_supported' THEN 1 WHEN 'supported' THEN 0 END), -100) AS label,
               count(s.span_id) AS spans
        FROM (SELECT DISTINCT run_id, rollout_id, config_id FROM hallucination_spans) l
        JOIN tokens t ON t.run_id = l.run_id AND t.rollout_id = l.rollout_id
        LEFT JOIN hallucination_spans s ON s.run_id = l.run_id AND s.rollout_id = l.rollout_id
             AND s.config_id = l.config_id AND t.pos BETWEEN s.start_pos AND s.end_pos
        GROUP BY ALL
    """,
}

