"""DuckDB over the lake: one view per table, read-only SQL, and result formatting.

`connect` gives an in-memory DuckDB connection where every registered table is a view:
on local disk a `read_parquet` glob (DuckDB's own multi-threaded reader, and files
committed later show up in the same view); on other filesystems a `pyarrow.dataset`
that DuckDB scans lazily. Tables without files are views over an empty relation with the
right columns, so queries never fail just because a stage has not run yet.

`run_query` is what `tokenmill sql` runs: one SELECT-like statement, on a connection whose
configuration is locked and whose file access is confined to the lake.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tokenmill import schema as S
from tokenmill.errors import LakeError, TokenmillError
from tokenmill.storage.lake import Lake, with_run_id

FORMATS = ("table", "csv", "json", "parquet")
_READ_ONLY_TYPES = {duckdb.StatementType.SELECT}  # DESCRIBE/SHOW/SUMMARIZE parse as SELECT
_EXPLAIN_PREFIX = re.compile(r"^\s*explain\s*(\([^)]*\)\s*)?(analy[sz]e\s+)?", re.IGNORECASE)
_INSTALL = re.compile(r"^\s*(force\s+)?install\b", re.IGNORECASE)
MAX_CELL = 48


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _tables_hint() -> str:
    return f"tables: {', '.join(sorted(S.TABLES))}; see `tokenmill sql 'SHOW TABLES'`"


def connect(lake: Lake, threads: int | None = None, read_only: bool = False,
            memory_mb: int | None = None) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB connection with one view per lake table.

    With `read_only`, file access is confined to the lake root and the configuration is
    locked once the views exist, so a query can neither read other files nor undo that
    (nor raise `memory_mb`, DuckDB's memory limit for the connection's queries).
    """
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_mb:
        con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
    for name in sorted(S.TABLES):
        _create_view(con, lake, name)
    for name, sql in S.VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    if read_only:
        _lock_down(con, lake)
    return con


def query(lake: Lake, sql: str, params=None) -> pa.Table:
    """One query over a fresh connection to the lake, as an Arrow table.

    An unreadable lake file is a LakeError naming it; other DuckDB errors are the caller's."""
    con = connect(lake)
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as e:
        if is_file_problem(e):
            raise _unreadable(lake, e, sql=sql) from None
        raise
    finally:
        con.close()


_CORRUPT = ("magic bytes", "thrift", "don't know what type", "corrupt", "tprotocolexception", "invalid ttype",
            "exceeded size limit", "deserializ", "snappy", "zstd", "decompress")
_GONE = ("no such file", "failed to open", "could not open", "could not read", "cannot open")


def is_file_problem(e: Exception) -> bool:
    """A DuckDB/Arrow error caused by a lake file (corrupted, truncated, gone), not by the SQL."""
    if isinstance(e, (duckdb.PermissionException, duckdb.ParserException, duckdb.BinderException,
                      duckdb.CatalogException)):
        return False
    msg = str(e).lower()
    return any(p in msg for p in _CORRUPT) or (".parquet" in msg and any(p in msg for p in _GONE))


def unreadable_error(lake: Lake, e: Exception, tables: list[str], run_id: str | None = None) -> LakeError:
    """`_unreadable` for a caller that knows which tables (of which run) it read."""
    return _unreadable(lake, e, sql=" ".join(tables), run_id=run_id)


def _unreadable(lake: Lake, e: Exception, table: str | None = None, path: str | None = None,
                sql: str | None = None, run_id: str | None = None) -> LakeError:
    """The error for a lake file a query could not read, naming the file: from DuckDB's
    message, else (a corrupt page behind an intact footer says only e.g. `invalid TType`)
    the first file of the query's tables that does not read in full (failure path only)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip() and not ln.startswith(("LINE ", " "))]
    detail = lines[0] if lines else type(e).__name__
    if path is None and sql is not None:
        path = _find_unreadable(lake, sql, str(e), run_id)
    return LakeError(f"{'table ' + table + ': ' if table else ''}a lake file cannot be read ({detail})",
                     where=path or lake.uri,
                     fix=f"run `tokenmill check --deep --lake {lake.uri}` to list every unreadable file, then restore "
                         "or remove them and re-run")


def _find_unreadable(lake: Lake, sql: str, message: str, run_id: str | None = None) -> str | None:
    words = set(re.findall(r"[a-z_]+", sql.lower()))
    for name in sorted(S.TABLES):
        if name not in words:
            continue
        files = lake.files(name, run_id)
        for f in files:
            if f in message:
                return f
        for f in files:
            try:
                with lake.fs.open_input_file(f) as fh:
                    pq.ParquetFile(fh).read()
            except (pa.ArrowException, OSError, ValueError):
                return f
    return None


def _first_unreadable(con: duckdb.DuckDBPyConnection, lake: Lake, name: str, e: Exception) -> str | None:
    """The file of table `name` that DuckDB cannot open, when its error does not say (only on
    the failure path: one schema read per file)."""
    files = lake.files(name)
    named = [f for f in files if f in str(e)]
    if named:
        return named[0]
    for f in files:
        try:
            con.execute(f"SELECT * FROM read_parquet({_sql_str(f)}) LIMIT 0")
        except duckdb.Error:
            return f
    return None


def _create_view(con: duckdb.DuckDBPyConnection, lake: Lake, name: str) -> None:
    spec = S.table_spec(name)
    if not lake.files(name):
        # a view over the typed empty relation: `SELECT count(*)` answers 0, columns resolve
        con.from_arrow(_duckdb_safe(with_run_id(spec.schema)).empty_table()).create_view(name)
    elif lake.is_local:
        try:  # union_by_name reads every file's footer here: a corrupted file fails now
            con.execute(
                f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_local_source(lake, name)}, "
                f"hive_partitioning = true, hive_types = {{'{S.PARTITION_COLUMN}': VARCHAR}}, union_by_name = true)"
            )
        except duckdb.Error as e:
            raise _unreadable(lake, e, name, _first_unreadable(con, lake, name, e)) from None
    else:
        # DuckDB cannot open fsspec filesystems itself; an arrow dataset is scanned lazily
        con.from_arrow(lake.dataset(name)).create_view(name)


def _local_source(lake: Lake, name: str) -> str:
    """A glob, so files committed after `connect` show up in the view.

    `[!._]` keeps hidden and underscore files out, as every other reader does (DuckDB's `*`
    matches dot-files). A root that itself holds glob characters gets the current file list.
    """
    base = lake.table_path(name)
    if any(c in base for c in "*?[]{}"):
        return "[" + ", ".join(_sql_str(f) for f in lake.files(name)) + "]"
    return _sql_str(f"{base}/{S.PARTITION_COLUMN}=*/[!._]*.parquet")


def _lock_down(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    if lake.is_local:
        con.execute(f"SET allowed_directories = [{_sql_str(lake.root.rstrip('/') + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The single read-only statement in `sql`, or LakeError."""
    try:
        stmts = con.extract_statements(sql)
    except duckdb.Error as e:
        raise LakeError(f"sql: {e}", fix=_tables_hint()) from None
    if len(stmts) != 1:
        raise LakeError(
            f"tokenmill sql runs exactly one statement, got {len(stmts)}",
            fix="pass one SELECT (or DESCRIBE/SHOW/SUMMARIZE/EXPLAIN) statement",
        )
    stmt = stmts[0]
    if stmt.type == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE executes its statement: what it explains must be read-only too
        check_read_only(con, _EXPLAIN_PREFIX.sub("", stmt.query, count=1))
    elif stmt.type not in _READ_ONLY_TYPES:
        kind = "INSTALL" if _INSTALL.match(stmt.query) else stmt.type.name  # DuckDB types INSTALL as LOAD
        raise LakeError(
            f"tokenmill sql is read-only: {kind} statements are not allowed",
            fix="use SELECT/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN; to export results use --format csv|json|parquet --out FILE",
        )
    return stmt.query


def run_query(lake: Lake, sql: str, threads: int | None = None) -> pa.Table:
    """Run one read-only SQL statement over the lake's views; the result as an arrow table."""
    con = connect(lake, threads=threads, read_only=True)
    try:
        query = check_read_only(con, sql)
        return con.sql(query).to_arrow_table()
    except duckdb.PermissionException as e:  # a file outside the lake, or a locked setting
        raise LakeError(f"tokenmill sql reads only the lake's tables: {str(e).splitlines()[0]}",
                        fix=f"query the lake through its views ({_tables_hint()})") from None
    except duckdb.Error as e:
        if is_file_problem(e):
            raise _unreadable(lake, e, sql=sql) from None
        raise LakeError(f"sql: {e}", fix=_tables_hint()) from None
    finally:
        con.close()


# -------------------------------------------------------------------- formatting


def check_out_path(out, lake: Lake | None = None) -> str:
    """`out` as a path a result may be written to, or LakeError naming what is wrong: its
    directory is missing, it is a directory, the directory is not writable, or it lies inside
    the lake (a file there would be read as lake data, or shadow it)."""
    path = os.path.abspath(os.fspath(out))
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        raise LakeError(f"--out {out} is a directory", fix="give a file name, e.g. --out result.csv")
    if not os.path.isdir(parent):
        raise LakeError(f"--out {out}: directory {parent} does not exist", fix=f"create it (mkdir -p {parent}) or pick another path")
    if not (os.path.exists(path) and not os.path.isfile(path)) and not os.access(parent, os.W_OK):
        raise LakeError(f"--out {out}: directory {parent} is not writable", fix="pick a directory you can write")
    if lake is not None and lake.is_local:
        root = os.path.realpath(lake.root)
        real = os.path.realpath(path)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            raise LakeError(f"--out {out} is inside the lake ({lake.root})", fix="write results outside the lake")
    return path


def format_result(table: pa.Table, fmt: str, out: str | None = None, max_rows: int = 100) -> str | None:
    """Render a query result. Returns the text, or None when it was written to `out`
    (atomically: a temp file renamed over it, or straight into a device such as /dev/stdout)."""
    if fmt not in FORMATS:
        raise LakeError(f"unknown format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    if fmt == "parquet" and not out:
        raise LakeError("parquet output needs a file", fix="--out FILE.parquet")
    if not out:
        return {"table": _as_rich_text, "csv": _as_csv, "json": _as_json_lines}[fmt](table, max_rows)
    write = ((lambda f: pq.write_table(table, f, compression="zstd")) if fmt == "parquet" else
             (lambda f: f.write({"table": _as_rich_text, "csv": _as_csv, "json": _as_json_lines}[fmt](
                 table, max_rows).encode("utf-8"))))
    _write_out(out, write)
    return None


def _write_out(out: str, write) -> None:
    device = os.path.exists(out) and not os.path.isfile(out)
    tmp = out if device else f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if not device:
                os.fsync(fh.fileno())
        if not device:
            os.replace(tmp, out)
    except OSError as e:
        if not device:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise LakeError(f"cannot write --out {out} ({e.strerror or e})",
                        fix="free space on that disk or pick another path" if e.errno == errno.ENOSPC else
                        "pick a path you can write") from None


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_dictionary(t)


def _nested_as_json(table: pa.Table) -> pa.Table:
    # CSV has no list type and arrow cannot cast lists to strings: encode them as JSON text.
    # Only nested columns pay this per-cell cost; flat columns stay in arrow.
    for i, field in enumerate(table.schema):
        if _is_nested(field.type):
            texts = [None if v is None else json.dumps(v, default=str) for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(texts, pa.string()))
    return table


def _as_csv(table: pa.Table, max_rows: int) -> str:
    buf = io.BytesIO()
    pacsv.write_csv(_nested_as_json(table), buf)
    return buf.getvalue().decode("utf-8")


def _as_json_lines(table: pa.Table, max_rows: int) -> str:
    import polars as pl

    try:
        return pl.from_arrow(table).write_ndjson()
    except Exception:  # a type polars cannot map: fall back to Python values, same shape
        return "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in table.to_pylist())


def _cell(value) -> str:
    if value is None:
        return "null"
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _as_rich_text(table: pa.Table, max_rows: int) -> str:
    if table.column_names == ["explain_key", "explain_value"]:
        # a plan is pre-drawn text; boxing and truncating its cells would make it unreadable
        return "\n".join(table.column("explain_value").to_pylist())
    from rich.console import Console
    from rich.table import Table as RichTable

    n = table.num_rows
    caption = f"{n} row{'s' if n != 1 else ''}" + (f" (showing first {max_rows})" if n > max_rows else "")
    rt = RichTable(caption=caption, caption_justify="left")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        rt.add_column(field.name, justify="right" if numeric else "left", overflow="ellipsis")
    # only the rows shown are converted to Python; column-wise, so duplicate names survive
    shown = table.slice(0, max_rows)
    for row in zip(*(col.to_pylist() for col in shown.columns)):
        rt.add_row(*(_cell(v) for v in row))
    width = max(80, shutil.get_terminal_size((160, 24)).columns)
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(rt)
    return console.file.getvalue()


def _duckdb_safe(schema: pa.Schema) -> pa.Schema:
    """DuckDB reads float16 from Parquet (as FLOAT) but not from Arrow: widen it for empty views."""
    def widen(t: pa.DataType) -> pa.DataType:
        if pa.types.is_float16(t):
            return pa.float32()
        if pa.types.is_list(t):
            return pa.list_(widen(t.value_type))
        return t
    return pa.schema([f.with_type(widen(f.type)) for f in schema])


def only_config(lake: Lake, table: str, run_id: str, who: str, fix: str, disjoint: bool = False) -> str | None:
    """The run's only labeller config in `table` (None when it has none). Several is an error
    asking for one (`fix` says how): mixing two labellings of the same tokens, or silently
    picking one, would change a result when a config is added. With `disjoint`, several
    configs of which no rollout carries two give None ("all of them"): critical labels each
    policy's rollouts under its own contrast models, so read together no token is labelled twice."""
    found = query(lake, f"SELECT DISTINCT config_id FROM {table} WHERE run_id = $run ORDER BY 1",
                  {"run": run_id}).column("config_id").to_pylist()
    if len(found) <= 1:
        return found[0] if found else None
    where = ""
    if disjoint:
        shared = query(lake, f"SELECT count(*) AS n FROM (SELECT rollout_id FROM {table} WHERE run_id = $run "
                             "GROUP BY rollout_id HAVING count(DISTINCT config_id) > 1)", {"run": run_id})
        if shared.column("n")[0].as_py() == 0:
            return None
        where = " on the same rollouts"
    raise TokenmillError(f"{who}: run {run_id!r} has {len(found)} {table} configs{where} ({', '.join(found)})", fix=fix)
