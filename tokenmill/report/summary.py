"""Run summaries as tables: what a run produced and how well each model did."""

from __future__ import annotations

import shlex

import pyarrow as pa

from tokenmill import labelers
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import Lake

# accuracy: share of rollouts verified correct; reward: mean reward; cut: share that hit max_tokens
SUMMARY_SQL = """
SELECT coalesce(world, source) AS world, model,
       count(*) AS rollouts,
       sum(num_tokens)::BIGINT AS tokens,
       round(avg(CASE WHEN verdict = 'correct' THEN 1.0 ELSE 0.0 END), 3) AS accuracy,
       round(avg(reward), 3) AS reward,
       round(avg(CASE WHEN finish_reason = 'length' THEN 1.0 ELSE 0.0 END), 3) AS cut
FROM rollouts WHERE run_id = ?
GROUP BY ALL ORDER BY world, model
"""


def run_summary(lake: Lake, run_id: str) -> pa.Table:
    return query(lake, SUMMARY_SQL, [run_id])


# the latest computation (most rollouts) of each source × model × k
PASS_AT_K_SQL = """
SELECT source, model, k, round(pass_at_k, 4) AS pass_at_k, problems, samples, correct, rollouts
FROM pass_at_k WHERE run_id = ?
QUALIFY rollouts = max(rollouts) OVER (PARTITION BY source, model, k)
ORDER BY source, model, k
"""


def pass_at_k_summary(lake: Lake, run_id: str) -> pa.Table:
    return query(lake, PASS_AT_K_SQL, [run_id])


def render_table(table: pa.Table, title: str | None = None):
    """A rich Table of a (small) arrow table. Text too wide for the console wraps instead of
    being cut: two long model paths that differ only at the end must still differ."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for name in table.column_names:
        numeric = pa.types.is_integer(table.schema.field(name).type) or pa.types.is_floating(table.schema.field(name).type)
        out.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in table.to_pylist():
        out.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    return out


def explore_hints(lake_uri: str, run_id: str) -> list[str]:
    return [
        f'tokenmill sql --lake {shlex.quote(lake_uri)} "SELECT world, model, avg(reward) FROM rollouts WHERE run_id = \'{run_id}\' GROUP BY ALL"',
        f'tokenmill sql --lake {shlex.quote(lake_uri)} "SELECT r.completion, t.pos, t.token_id, t.logprob, t.entropy '
        f'FROM tokens t JOIN rollouts r USING (rollout_id, run_id) WHERE r.verdict = \'incorrect\' LIMIT 20"',
        # plain DuckDB, no tokenmill: the lake is just Parquet files
        f"python -c \"import duckdb; duckdb.sql(\\\"SELECT run_id, count(*) FROM read_parquet('{lake_uri}/tokens/*/*.parquet', "
        f"hive_partitioning=true) GROUP BY run_id\\\").show()\"",
    ]


# each role's scores: a role filled by two models is two rows
SCORE_SUMMARY_SQL = """
SELECT 'score' AS labeler, CASE WHEN model = 'policy' THEN model ELSE model || ' = ' || model_id END AS output,
       NULL::VARCHAR AS config_id, count(*) AS rows, count(DISTINCT rollout_id) AS rollouts,
       round(avg(logprob), 4) AS mean, NULL::DOUBLE AS flagged
FROM scores WHERE run_id = $run GROUP BY ALL
"""


def label_summary(lake: Lake, run_id: str) -> pa.Table:
    """One row per label family output and config (`tokenmill.labelers`: the registry's
    per-token values, one config at a time — two configs of one family are two rows, never
    pooled): tokens labelled, rollouts, mean value (the share of tokens for a category), the
    share flagged; then each scoring role's tokens and mean logprob."""
    found = labelers.configs_in(lambda sql, binds: query(lake, sql, binds).to_pylist(), run_id)
    parts = [p for p in (labelers.summary_sql(found), SCORE_SUMMARY_SQL) if p]
    return query(lake, f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY labeler, output, config_id", {"run": run_id})


def label_hints(lake_uri: str, run_id: str) -> list[str]:
    return [
        f'tokenmill sql --lake {shlex.quote(lake_uri)} "{TOP_CRITICAL_SQL.format(run=run_id)}"',
    ]


# the ten most critical tokens of incorrect arithmetic rollouts, with their text
TOP_CRITICAL_SQL = (
    "SELECT c.p_ce, substr(r.completion, t.char_start + 1, t.char_end - t.char_start) AS token, "
    "replace(substr(r.completion, 1, t.char_end), chr(10), ' | ') AS up_to_token FROM critical c "
    "JOIN tokens t USING (run_id, rollout_id, pos) JOIN rollouts r USING (run_id, rollout_id) "
    "WHERE c.run_id = '{run}' AND r.world = 'arithmetic' AND r.verdict = 'incorrect' ORDER BY c.p_ce LIMIT 10"
)


SPAN_COUNTS_SQL = """
SELECT model, entity_type, count(*) FILTER (WHERE label = 'supported') AS supported,
       count(*) FILTER (WHERE label = 'not_supported') AS not_supported,
       count(*) FILTER (WHERE label = 'unverifiable') AS unverifiable,
       count(*) FILTER (WHERE label IS NULL) AS unlabelled
FROM hallucination_spans WHERE run_id = ? GROUP BY ALL ORDER BY model, entity_type
"""

PROBE_AUC_SQL = """
SELECT model, layer, level, method, round(auc::DOUBLE, 3) AS auc, positives, negatives
FROM probe_eval WHERE run_id = $run AND list_contains($ids, probe_id)
ORDER BY model, level, CASE method WHEN 'probe' THEN 0 ELSE 1 END, method
"""


def span_counts(lake: Lake, run_id: str) -> pa.Table:
    """Hallucination spans per model and entity type, by label."""
    return query(lake, SPAN_COUNTS_SQL, [run_id])


def probe_auc_table(lake: Lake, run_id: str, probe_ids: list[str]) -> pa.Table:
    """Held-out AUC of the probes next to the uncertainty baselines."""
    return query(lake, PROBE_AUC_SQL, {"run": run_id, "ids": probe_ids})


AST_FILE_SUMMARY_SQL = """
SELECT coalesce(language, 'skipped') AS language, count(*) AS files, sum(bytes)::BIGINT AS bytes,
       sum(nodes)::BIGINT AS nodes, sum(errors)::BIGINT AS errors, sum(missing)::BIGINT AS missing,
       count(*) FILTER (WHERE errors + missing > 0) AS files_with_errors, any_value(skipped) AS a_skip_reason
FROM ast_files WHERE run_id = ? GROUP BY ALL ORDER BY files DESC
"""

AST_CATEGORY_SQL = """
SELECT category, count(*) AS tokens, round(count(*) / sum(count(*)) OVER (), 4) AS share
FROM ast_tokens WHERE run_id = ? GROUP BY category ORDER BY tokens DESC
"""


def ast_file_summary(lake: Lake, run_id: str) -> pa.Table:
    """Parsed files per language: bytes, nodes, real error and missing counts, skips."""
    return query(lake, AST_FILE_SUMMARY_SQL, [run_id])


def ast_category_shares(lake: Lake, run_id: str) -> pa.Table:
    """Share of generated code tokens per universal AST category."""
    return query(lake, AST_CATEGORY_SQL, [run_id])

