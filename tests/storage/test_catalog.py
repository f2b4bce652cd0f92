"""DuckDB views over the lake, read-only SQL, and result formats."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenmill import schema as S
from tokenmill.errors import LakeError
from tokenmill.storage.catalog import connect, format_result, run_query
from tokenmill.storage.lake import Lake


def tokens(rollouts: dict[str, int]) -> pa.Table:
    """Token rows: `per` tokens for each rollout id, logprob = -pos/10."""
    ids = np.repeat(np.array(list(rollouts), dtype=object), list(rollouts.values()))
    pos = np.concatenate([np.arange(k, dtype=np.int32) for k in rollouts.values()])
    n = len(pos)
    return pa.table(
        {
            "rollout_id": ids,
            "pos": pos,
            "token_id": np.arange(n, dtype=np.int32),
            "logprob": -pos.astype(np.float32) / 10,
            "entropy": pa.nulls(n, pa.float32()),
            "topk_ids": pa.array([[7, 8, 9]] * n, pa.list_(pa.int32())),
            "topk_logprobs": pa.nulls(n, pa.list_(pa.float32())),
            "char_start": pos,
            "char_end": pos + 1,
        }
    )


@pytest.fixture
def lake(tmp_path):
    lk = Lake(tmp_path / "lake")
    lk.commit("tokens", "20261122", tokens({"a": 3, "b": 5}))
    lk.commit("tokens", "20261123", tokens({"c": 2}))
    return lk


def test_views_exist_for_every_table_even_when_lake_is_empty(tmp_path):
    con = connect(Lake(tmp_path / "empty"))
    names = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    assert set(S.TABLES) <= names
    for table, spec in S.TABLES.items():
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert cols == spec.schema.names + ["run_id"]


def test_group_by_query_returns_right_numbers(lake):
    result = run_query(
        lake,
        "SELECT run_id, rollout_id, count(*) AS n, round(sum(logprob), 3) AS lp "
        "FROM tokens GROUP BY ALL ORDER BY rollout_id",
    )
    assert result.to_pylist() == [
        {"run_id": "20261122", "rollout_id": "a", "n": 3, "lp": -0.3},
        {"run_id": "20261122", "rollout_id": "b", "n": 5, "lp": -1.0},
        {"run_id": "20261123", "rollout_id": "c", "n": 2, "lp": -0.1},
    ]


def test_run_id_is_varchar_in_views(lake):
    con = connect(lake)
    assert con.execute("SELECT DISTINCT typeof(run_id) FROM tokens").fetchall() == [("VARCHAR",)]
    # a string comparison, with partition pruning, must match an all-digit run id
    assert con.execute("SELECT count(*) FROM tokens WHERE run_id = '20261123'").fetchone()[0] == 2


def test_view_sees_commits_made_after_connect(lake):
    con = connect(lake)
    lake.commit("tokens", "20261123", tokens({"d": 4}))
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 14


def test_view_joins_tables(lake):
    con = connect(lake)
    # rollouts is empty: the join still binds because the empty view has typed columns
    row = con.execute(
        "SELECT count(*) FROM tokens t LEFT JOIN rollouts r USING (rollout_id) WHERE r.reward IS NULL"
    ).fetchone()
    assert row == (10,)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE x AS SELECT 1",
        "COPY (SELECT 1) TO '{root}/x.csv'",
        "INSERT INTO tokens SELECT * FROM tokens",
        "UPDATE tokens SET pos = 0",
        "DELETE FROM tokens",
        "ATTACH '{root}/other.duckdb' AS other",
        "DETACH other",
        "INSTALL httpfs",
        "SET threads = 1",
        "SET enable_external_access = true",
        "PRAGMA version",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/x.csv'",
        "explain (format json) analyze copy (select 1) to '{root}/x.csv'",
        "SELECT 1; CREATE TABLE y AS SELECT 2",
        "EXPORT DATABASE '{root}/dump'",
        "DROP VIEW tokens",
        "LOAD json",
    ],
)
def test_run_query_rejects_anything_but_reads(lake, sql):
    # targets inside the lake root, where DuckDB's own file-access limit would let them through
    before = sorted(p.name for p in Path(lake.root).iterdir())
    with pytest.raises(LakeError) as e:
        run_query(lake, sql.format(root=lake.root))
    assert e.value.fix
    assert sorted(p.name for p in Path(lake.root).iterdir()) == before


def test_run_query_names_the_statement_type_it_refused(lake):
    with pytest.raises(LakeError, match="read-only: CREATE"):
        run_query(lake, "CREATE TABLE x AS SELECT 1")
    with pytest.raises(LakeError, match="read-only: INSTALL"):  # DuckDB's own type for it is LOAD
        run_query(lake, "FORCE INSTALL httpfs")


def test_run_query_cannot_read_files_outside_the_lake(lake, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for sql in (f"SELECT * FROM read_csv('{secret}')", "SELECT * FROM read_csv('/etc/passwd')",
                "SELECT * FROM read_text('/etc/hostname')", f"SELECT * FROM glob('{tmp_path}/*')"):
        with pytest.raises(LakeError, match="reads only the lake's tables") as e:
            run_query(lake, sql)
        assert "secret.csv" in str(e.value) or "/etc/" in str(e.value) or str(tmp_path) in str(e.value)


def test_a_corrupted_file_is_a_lake_error_naming_it(lake):
    # bytes overwritten inside the file (footer intact): DuckDB's own error does not name it
    bad = lake.files("tokens", "20261123")[0]
    with open(bad, "r+b") as fh:
        fh.seek(8)
        fh.write(b"\xff" * (Path(bad).stat().st_size // 2))
    for query in ("SELECT count(*) FROM tokens", "SELECT count(*) FROM prompts"):  # views are built up front
        with pytest.raises(LakeError, match="table tokens: a lake file cannot be read") as e:
            run_query(lake, query)
        assert e.value.where == bad and "tokenmill check" in e.value.fix


@pytest.mark.parametrize(
    "sql",
    ["DESCRIBE tokens", "SHOW TABLES", "SUMMARIZE tokens", "EXPLAIN SELECT * FROM tokens", "FROM tokens LIMIT 1"],
)
def test_run_query_allows_read_only_statements(lake, sql):
    assert run_query(lake, sql).num_rows > 0


def test_bad_sql_becomes_lake_error_with_hint(lake):
    with pytest.raises(LakeError) as e:
        run_query(lake, "SELECT no_such_column FROM tokens")
    assert "no_such_column" in str(e.value)
    assert "tokens" in e.value.fix and "SHOW TABLES" in e.value.fix
    with pytest.raises(LakeError, match="(?i)syntax"):
        run_query(lake, "SELEC 1")


def test_memory_lake_views_and_query():
    lk = Lake(f"memory://tm-{uuid.uuid4().hex}/lake")
    lk.commit("tokens", "007", tokens({"a": 2, "b": 1}))
    result = run_query(lk, "SELECT run_id, count(*) AS n FROM tokens GROUP BY run_id")
    assert result.to_pylist() == [{"run_id": "007", "n": 3}]
    assert run_query(lk, "SELECT count(*) AS n FROM prompts").to_pylist() == [{"n": 0}]


# ------------------------------------------------------------------ formats


def test_format_table_renders_rows_truncates_and_counts(lake):
    long = pa.table({"k": ["x" * 500, "short"], "n": [1, 2]})
    text = format_result(long, "table", None)
    assert "x" * 500 not in text and "…" in text
    assert "short" in text and "2 rows" in text
    many = run_query(lake, "SELECT * FROM tokens")
    text = format_result(many, "table", None, max_rows=4)
    assert "10 rows (showing first 4)" in text
    assert text.count("│ a ") + text.count("│ b ") + text.count("│ c ") == 4


def test_format_csv_is_parseable_with_lists_as_json(lake):
    result = run_query(lake, "SELECT rollout_id, pos, topk_ids, run_id FROM tokens ORDER BY rollout_id, pos")
    rows = list(csv.DictReader(io.StringIO(format_result(result, "csv", None))))
    assert len(rows) == 10
    assert rows[0] == {"rollout_id": "a", "pos": "0", "topk_ids": "[7, 8, 9]", "run_id": "20261122"}


def test_format_json_lines_parse_with_lists_as_arrays(lake):
    result = run_query(lake, "SELECT * FROM tokens ORDER BY rollout_id, pos")
    lines = format_result(result, "json", None).splitlines()
    objs = [json.loads(line) for line in lines]
    assert len(objs) == 10
    assert objs[0]["topk_ids"] == [7, 8, 9] and objs[0]["entropy"] is None
    assert objs[0]["run_id"] == "20261122"


def test_format_parquet_writes_readable_file(lake, tmp_path):
    result = run_query(lake, "SELECT rollout_id, count(*) AS n FROM tokens GROUP BY 1 ORDER BY 1")
    out = tmp_path / "result.parquet"
    assert format_result(result, "parquet", str(out)) is None
    assert pq.read_table(out).equals(result)


def test_format_parquet_without_out_asks_for_a_file(lake):
    with pytest.raises(LakeError) as e:
        format_result(pa.table({"a": [1]}), "parquet", None)
    assert "--out FILE.parquet" in e.value.fix


def test_text_formats_write_to_out_when_given(tmp_path):
    out = tmp_path / "r.csv"
    assert format_result(pa.table({"a": [1, 2]}), "csv", str(out)) is None
    assert out.read_text().splitlines() == ['"a"', "1", "2"]


def test_unknown_format_raises():
    with pytest.raises(LakeError, match="xml"):
        format_result(pa.table({"a": [1]}), "xml", None)
