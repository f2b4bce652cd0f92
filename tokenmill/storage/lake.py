"""The token lake: hive-partitioned Parquet tables with atomic, idempotent commits.

Layout::

    <root>/<table>/run_id=<run_id>/part-<id>.parquet     committed data
    <root>/_staging/<relpath>                            per-shard scratch files of a stage

The partition column `run_id` lives only in the path. A commit

* conforms the batch to the table's schema (clear error naming table and column),
* drops rows whose `dedupe_on` value(s) are already in that run's partition (idempotent:
  re-running the same work adds nothing),
* names the file after its content, so two identical concurrent commits target the same
  file instead of writing two copies,
* writes to a hidden temporary name and renames it into place (local disk), or PUTs one
  complete object (object stores, where a single PUT is already atomic). Readers only
  ever see `*.parquet` files, so they see a file whole or not at all.

`Lake` works on any `pyarrow.fs` filesystem: local paths, URIs pyarrow knows (s3://,
gs://, hdfs://, file://) and, through fsspec, anything fsspec knows (memory://, …).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from typing import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tokenmill import schema as S
from tokenmill.errors import LakeError, unreadable_file
from tokenmill.ids import content_id

try:  # advisory locks serialise commits to one partition on local disk (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

STAGING_DIR = "_staging"
PARQUET_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".commit.lock"
DONE_MARKER = "DONE"  # last file of a copied artifact directory
ARTIFACTS_DIR = "_artifacts"  # trained models, routers, probes: <kind>/<id>/
REPORTS_DIR = "_reports"  # plots per run
COMPRESSION = "zstd"
_RUN_ID_RE = re.compile(r"[A-Za-z0-9_.:-]+")
_PARTITION_PREFIX = f"{S.PARTITION_COLUMN}="


@dataclass(frozen=True)
class CommitResult:
    table: str
    run_id: str
    path: str | None  # the file written (filesystem path), None when every row already existed
    rows_written: int
    rows_skipped: int


@dataclass(frozen=True)
class Problem:
    """One finding of `Lake.check()`."""

    path: str
    kind: str  # unreadable | newer_schema | no_metadata | stray_temp
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def check_run_id(run_id: str) -> str:
    # run ids become directory names and SQL literals: keep them to a safe alphabet
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id) or run_id in (".", ".."):
        raise LakeError(
            f"invalid run_id {run_id!r}",
            fix="use a non-empty run id made of letters, digits and _ . : -",
        )
    return run_id


def partition_schema() -> pa.Schema:
    # run ids such as "20261122" must stay strings: never let a reader infer the type
    return pa.schema([pa.field(S.PARTITION_COLUMN, pa.string())])


def with_run_id(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(S.PARTITION_COLUMN, pa.string()))


def _is_visible(relpath: str) -> bool:
    """A data file readers may see: ends in .parquet, no hidden/underscore path component."""
    parts = relpath.split("/")
    return relpath.endswith(PARQUET_SUFFIX) and not any(p.startswith((".", "_")) for p in parts)


def _is_temp(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def dedupe_key(spec: S.TableSpec, data: pa.Table) -> pa.ChunkedArray:
    """The value a commit deduplicates on: one column, or several joined into one string.

    Label tables dedupe on (rollout_id, config) pairs: the same rollouts labelled with other
    parameters are new rows, the same ones again are not.
    """
    cols = spec.dedupe_cols
    if len(cols) == 1:
        return data.column(cols[0])
    parts = [pc.cast(data.column(c), pa.string()) for c in cols]
    return pc.binary_join_element_wise(*parts, "\x1f")


def _sorted_keys(col: pa.ChunkedArray) -> list[str]:
    """Distinct non-null keys as sorted strings: the content a part file is named after."""
    keys = pc.drop_null(pc.unique(col))
    return keys.take(pc.sort_indices(keys)).cast(pa.string()).to_pylist()


def _version_newer(found: str, ours: str) -> bool:
    try:
        return int(found) > int(ours)
    except ValueError:
        return found > ours


class Lake:
    """A Parquet token lake rooted at a local path or a filesystem URI."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = os.fspath(uri)
        self.fs, self.root = _resolve(self.uri)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # ---------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        for p in parts:
            if p.startswith("/") or ".." in p.split("/"):
                raise LakeError(f"path part {p!r} escapes the lake", where=self.uri, fix="use a relative path inside the lake")
        return posixpath.join(self.root, *parts)

    def table_path(self, table: str) -> str:
        S.table_spec(table)  # unknown table -> LakeError listing the known ones
        return self.path(table)

    def partition_path(self, table: str, run_id: str) -> str:
        return posixpath.join(self.table_path(table), _PARTITION_PREFIX + check_run_id(run_id))

    def require(self) -> "Lake":
        """This lake, if its root exists; else LakeError (a reader given a mistyped --lake
        would otherwise answer every query with 0 rows)."""
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            raise LakeError(f"no lake at {self.uri}", fix="check --lake (or $TOKENMILL_LAKE); `tokenmill run` or "
                                                         "`make demo` creates one")
        return self

    def exists(self, relpath: str) -> bool:
        """Whether `relpath` (relative to the lake root) exists, e.g. "_staging/gen/shard-0.parquet"."""
        return self.fs.get_file_info(self.path(relpath)).type != pafs.FileType.NotFound

    def _walk(self, base: str) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]

    def files(self, table: str, run_id: str | list[str] | None = None) -> list[str]:
        """Committed parquet files of a table (optionally of some runs), sorted."""
        base = self.table_path(table)
        runs = _as_run_list(run_id)
        bases = [posixpath.join(base, _PARTITION_PREFIX + r) for r in runs] if runs is not None else [base]
        out = []
        for b in bases:
            for info in self._walk(b):
                rel = posixpath.relpath(info.path, base)
                # only <table>/run_id=<x>/<file>.parquet is data; anything else is not ours to read
                if _is_visible(rel) and rel.count("/") == 1 and rel.startswith(_PARTITION_PREFIX):
                    out.append(info.path)
        return sorted(out)

    def runs(self, table: str = "rollouts") -> list[str]:
        """Run ids that have at least one committed file in `table`, sorted."""
        base = self.table_path(table)
        names = {posixpath.relpath(f, base).split("/")[0] for f in self.files(table)}
        return sorted(n[len(_PARTITION_PREFIX):] for n in names)

    def tables(self) -> list[str]:
        """Registered tables that hold data."""
        return [t for t in sorted(S.TABLES) if self.files(t)]

    # ---------------------------------------------------------------- commit

    def commit(self, table: str, run_id: str, data: pa.Table) -> CommitResult:
        """Append `data` to `table`'s partition of `run_id`: validated, idempotent, atomic."""
        spec = S.table_spec(table)
        check_run_id(run_id)
        incoming = conform(spec, data, run_id)
        part_dir = self.partition_path(table, run_id)
        name = "part-" + content_id(table, run_id, *_sorted_keys(dedupe_key(spec, incoming))) + PARQUET_SUFFIX
        with self._partition_lock(part_dir):
            fresh = self._drop_existing(spec, run_id, incoming)
            skipped = incoming.num_rows - fresh.num_rows
            if fresh.num_rows == 0:
                return CommitResult(table, run_id, None, 0, skipped)
            path = posixpath.join(part_dir, name)
            self._write_atomic(path, _with_file_metadata(fresh, table))
        return CommitResult(table, run_id, path, fresh.num_rows, skipped)

    def _drop_existing(self, spec: S.TableSpec, run_id: str, data: pa.Table) -> pa.Table:
        files = self.files(spec.name, run_id)
        if not files or data.num_rows == 0:
            return data
        cols = list(spec.dedupe_cols)
        # only the dedupe columns are read: a partition of token rows stays cheap to check
        try:
            existing = ds.dataset(files, format="parquet", filesystem=self.fs).to_table(columns=cols)
        except (pa.ArrowException, OSError) as e:
            raise LakeError(
                f"table {spec.name}: cannot read the existing files of run {run_id!r} to deduplicate: {e}",
                where=self.partition_path(spec.name, run_id),
                fix=f"run `tokenmill check --deep --lake {self.uri}` and restore or remove the unreadable files",
            ) from e
        existing = pa.table({c: existing.column(c).cast(spec.schema.field(c).type) for c in cols})
        seen = pc.unique(dedupe_key(spec, existing))
        # a null key is never "already written": keep such rows rather than lose them
        keep = pc.fill_null(pc.invert(pc.is_in(dedupe_key(spec, data), value_set=seen)), True)
        # filter() copies every column (lists included) even when it keeps every row
        return data if pc.all(keep).as_py() else data.filter(keep)

    @contextlib.contextmanager
    def _partition_lock(self, part_dir: str) -> Iterator[None]:
        """Serialise commits to one partition across processes (local disk only).

        Without it, two different but overlapping concurrent batches could both pass the
        dedupe check and write the shared rows twice. Object stores have no such lock; there
        the deterministic file name still collapses identical concurrent commits into one.
        """
        self.fs.create_dir(part_dir, recursive=True)
        if not (self.is_local and fcntl):
            yield
            return
        with open(posixpath.join(part_dir, LOCK_NAME), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_atomic(self, path: str, table: pa.Table) -> None:
        if self.is_local:
            self._write_via_temp(path, table)
        else:
            self._write_one_put(path, table)

    def _write_via_temp(self, path: str, table: pa.Table | bytes) -> None:
        # hidden name not ending in .parquet: no reader or glob ever picks up a partial file
        d, base = posixpath.split(path)
        tmp = posixpath.join(d, f".{base}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        try:
            with self.fs.open_output_stream(tmp) as sink:
                if isinstance(table, bytes):
                    sink.write(table)
                else:
                    pq.write_table(table, sink, compression=COMPRESSION)
            self.fs.move(tmp, path)  # rename(2): atomic replace within one directory
        except BaseException as e:
            with contextlib.suppress(Exception):
                self.fs.delete_file(tmp)
            if _disk_full(e):  # the temp file is gone, the target untouched: a re-run resumes
                raise LakeError("no space left on the lake's disk", where=path,
                                fix="free space (or point --lake at a larger disk) and re-run with the same --run-id "
                                    "(the run id is in the path): committed shards are kept, nothing partial was "
                                    "written") from None
            raise

    def _write_one_put(self, path: str, table: pa.Table) -> None:
        # serialise fully in memory first: a failure while encoding never touches the store,
        # and the store sees one complete object or none
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression=COMPRESSION)
        data = buf.getvalue()
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as sink:
            sink.write(data)

    # ---------------------------------------------------------------- read

    def dataset(self, table: str, run_id: str | list[str] | None = None) -> ds.Dataset:
        """A lazy pyarrow dataset of the table's committed files, `run_id` a string column."""
        spec = S.table_spec(table)
        schema = with_run_id(spec.schema)
        files = self.files(table, run_id)
        if not files:
            return ds.dataset(schema.empty_table())
        return ds.dataset(
            files,
            schema=schema,
            format="parquet",
            filesystem=self.fs,
            partitioning=ds.partitioning(partition_schema(), flavor="hive"),
            partition_base_dir=self.table_path(table),
        )

    def read(
        self,
        table: str,
        run_id: str | list[str] | None = None,
        columns: list[str] | None = None,
        filter: pc.Expression | None = None,
    ) -> pa.Table:
        """Read a table (all runs, one run or a list of runs); `run_id` is the last column."""
        dset = self.dataset(table, run_id)
        if columns is not None:
            unknown = [c for c in columns if c not in dset.schema.names]
            if unknown:
                raise LakeError(
                    f"table {table}: unknown column(s) {', '.join(unknown)}",
                    fix=f"columns: {', '.join(dset.schema.names)}",
                )
        try:
            return dset.to_table(columns=columns, filter=filter)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
            raise LakeError(
                f"table {table}: cannot read: {e}",
                where=self.uri,
                fix=f"run `tokenmill check --lake {self.uri}` to list unreadable files (or check the filter's columns)",
            ) from e

    def read_part(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """One committed file (a path from `files`), e.g. one shard of a run's rollouts."""
        try:
            return pq.read_table(path, filesystem=self.fs, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise unreadable_file(path, e, self.uri) from None

    # ---------------------------------------------------------------- artifacts

    def put_dir(self, local_dir: str | os.PathLike, relpath: str, done: bool = True) -> str:
        """Copy a local directory (a saved model) into the lake; atomic per file, the
        `DONE` marker written last so a half-copied artifact is never taken as complete.
        With `done=False` the caller writes the marker (`mark_dir_done`) once whatever
        else belongs to the artifact (its table rows) is committed."""
        local_dir = Path(local_dir)
        dest = self.path(relpath)
        for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            target = posixpath.join(dest, f.relative_to(local_dir).as_posix())
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            self._write_bytes(target, f.read_bytes())
        if done:
            self.mark_dir_done(relpath)
        return dest

    def mark_dir_done(self, relpath: str) -> None:
        """Write the `DONE` marker of an artifact directory: from now on `has_dir` is true."""
        self._write_bytes(posixpath.join(self.path(relpath), DONE_MARKER), b"")

    def has_dir(self, relpath: str) -> bool:
        return self.exists(posixpath.join(relpath, DONE_MARKER))

    def local_dir(self, relpath: str, cache: str | os.PathLike) -> str:
        """A local directory with the artifact's files: the lake's own path on local disk,
        else a copy under `cache` (models are loaded from local files)."""
        if self.is_local:
            return self.path(relpath)
        # one cache folder per lake: the same relpath in two lakes is two artifacts
        dest = Path(cache) / content_id(self.uri) / relpath
        if (dest / DONE_MARKER).exists():
            return str(dest)
        if not self.has_dir(relpath):
            raise LakeError(f"artifact {relpath!r} is incomplete or missing (no {DONE_MARKER} marker)",
                            where=self.uri, fix="re-run the stage that writes it")
        src_root = self.path(relpath)
        files = [i.path for i in self._walk(src_root)]
        # every file via a temp name and rename, the marker last: a process killed mid-copy, or
        # another process copying the same artifact, never leaves a cache taken as complete
        for path in sorted(files, key=lambda p: posixpath.basename(p) == DONE_MARKER):
            target = dest / posixpath.relpath(path, src_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
            try:
                with self.fs.open_input_stream(path) as src:
                    tmp.write_bytes(src.read())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return str(dest)

    def _write_bytes(self, path: str, data: bytes) -> None:
        if self.is_local:
            self._write_via_temp(path, data)
        else:  # one whole PUT
            with self.fs.open_output_stream(path) as sink:
                sink.write(data)

    # ---------------------------------------------------------------- staging

    def scratch_path(self, relpath: str) -> str:
        return self.path(STAGING_DIR, relpath)

    def write_scratch(self, relpath: str, data: pa.Table) -> str:
        """Atomically write an intermediate file under `<root>/_staging/`; returns its path."""
        path = self.scratch_path(relpath)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        self._write_atomic(path, data)
        return path

    def read_scratch(self, relpath: str) -> pa.Table:
        path = self.scratch_path(relpath)
        try:
            return pq.read_table(path, filesystem=self.fs)
        except FileNotFoundError as e:
            raise LakeError(f"no staging file {relpath!r}", where=self.uri, fix="run the stage that writes it first") from e

    # ---------------------------------------------------------------- check

    def check(self, strict: bool = False, deep: bool = False) -> list[Problem]:
        """Walk the lake: unreadable table files, newer schema versions, stray temp files
        (tables, staging, artifacts, reports) and artifact directories without their DONE
        marker (a training that crashed or is still running; its stage redoes it).

        Costs one footer read per table file (with `deep`, a full read of every column, which
        finds corrupt data pages too), so it is a maintenance command, not part of `read`.
        With `strict`, raise a LakeError naming the problem files instead of returning them.
        """
        problems = [
            Problem(info.path, "stray_temp", "temporary file of an interrupted or running write")
            for top in (STAGING_DIR, ARTIFACTS_DIR, REPORTS_DIR)
            for info in self._walk(self.path(top))
            if _is_temp(info.path)
        ]
        problems += [Problem(d, "incomplete_artifact", f"artifact without its {DONE_MARKER} marker: a crashed or running "
                                                       "training; the stage that writes it redoes it on its next run")
                     for d in self._incomplete_artifacts()]
        for table in sorted(S.TABLES):
            base = self.table_path(table)
            for info in self._walk(base):
                rel = posixpath.relpath(info.path, base)
                if _is_temp(rel):
                    problems.append(Problem(info.path, "stray_temp", "temporary file of an interrupted or running commit"))
                elif _is_visible(rel):
                    problems.extend(self._check_file(info.path, table, deep))
        if strict and problems:
            raise LakeError(
                f"{len(problems)} problem(s) in the lake: " + "; ".join(map(str, problems[:5])),
                where=self.uri,
                fix="remove stray temp files and unreadable files; upgrade tokenmill for newer schema versions",
            )
        return problems

    def _incomplete_artifacts(self) -> list[str]:
        """`_artifacts/<kind>/<id>/` directories that hold files but no DONE marker."""
        base = self.path(ARTIFACTS_DIR)
        dirs: dict[str, bool] = {}
        for info in self._walk(base):
            parts = posixpath.relpath(info.path, base).split("/")
            if len(parts) >= 3:  # <kind>/<id>/<file...>
                d = posixpath.join(base, parts[0], parts[1])
                dirs[d] = dirs.get(d, False) or (len(parts) == 3 and parts[2] == DONE_MARKER)
        return sorted(d for d, done in dirs.items() if not done)

    def _check_file(self, path: str, table: str, deep: bool = False) -> list[Problem]:
        try:
            if deep:  # decode every page: a corrupt page behind a sound footer shows only here
                meta = pq.read_table(path, filesystem=self.fs).schema.metadata or {}
            else:
                meta = pq.read_schema(path, filesystem=self.fs).metadata or {}
        except Exception as e:  # any failure to parse the file means it is unusable
            return [Problem(path, "unreadable", str(e))]
        version = meta.get(S.META_SCHEMA_VERSION)
        if version is None:
            return [Problem(path, "no_metadata", "file lacks tokenmill.schema_version")]
        version = version.decode()
        if _version_newer(version, S.SCHEMA_VERSION):
            return [Problem(path, "newer_schema", f"schema version {version} is newer than ours ({S.SCHEMA_VERSION})")]
        found_table = meta.get(S.META_TABLE, b"").decode()
        if found_table != table:
            return [Problem(path, "wrong_table", f"file says table {found_table!r}, lies under {table!r}")]
        return []


# -------------------------------------------------------------------- helpers


def conform(spec: S.TableSpec, data: pa.Table, run_id: str | None = None) -> pa.Table:
    """Cast `data` to the table schema column by column so that errors can name the column."""
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        raise LakeError(f"table {spec.name}: expected a pyarrow.Table, got {type(data).__name__}")
    missing = [n for n in spec.schema.names if n not in data.column_names]
    if missing:
        raise LakeError(
            f"table {spec.name}: missing column(s) {', '.join(missing)}",
            where=f"{spec.name}.{missing[0]}",
            fix=f"provide every column of {spec.name}: {', '.join(spec.schema.names)}",
        )
    if run_id is not None and S.PARTITION_COLUMN in data.column_names:
        _check_run_id_column(spec, data.column(S.PARTITION_COLUMN), run_id)
    return pa.Table.from_arrays([_conform_column(spec, data, f) for f in spec.schema], schema=spec.schema)


def _conform_column(spec: S.TableSpec, data: pa.Table, field: pa.Field) -> pa.ChunkedArray:
    where = f"{spec.name}.{field.name}"
    col = data.column(field.name)
    try:
        col = col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise LakeError(
            f"table {spec.name}: column {field.name} has type {col.type}, cannot cast to {field.type}: {e}",
            where=where,
            fix=f"give {field.name} values of type {field.type}",
        ) from None
    if not field.nullable and col.null_count:
        first = pc.index(pc.is_null(col), True).as_py()
        raise LakeError(
            f"table {spec.name}: column {field.name} must not be null ({col.null_count} null(s), first at row {first})",
            where=where,
            fix=f"fill {field.name} for every row",
        )
    return col


def _check_run_id_column(spec: S.TableSpec, col: pa.ChunkedArray, run_id: str) -> None:
    # the partition decides run_id; a batch that claims another run is a caller bug
    mismatched = pc.sum(pc.not_equal(col.cast(pa.string()), run_id)).as_py() or 0
    if mismatched or col.null_count:
        raise LakeError(
            f"table {spec.name}: column run_id disagrees with the commit's run_id {run_id!r}",
            where=f"{spec.name}.run_id",
            fix="drop the run_id column (the partition sets it) or make it match",
        )


def _with_file_metadata(table: pa.Table, name: str) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[S.META_SCHEMA_VERSION] = S.SCHEMA_VERSION.encode()
    meta[S.META_TABLE] = name.encode()
    return table.replace_schema_metadata(meta)


def _disk_full(e: BaseException) -> bool:
    """ENOSPC / EDQUOT, as OSError or as Arrow's IOError text."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    return isinstance(e, (OSError, pa.ArrowException)) and ("no space left" in text or "quota exceeded" in text)


def _as_run_list(run_id: str | list[str] | None) -> list[str] | None:
    if run_id is None:
        return None
    runs = [run_id] if isinstance(run_id, str) else list(run_id)
    return [check_run_id(r) for r in runs]


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local path, a pyarrow URI, or an fsspec URI."""
    if not uri or not uri.strip():
        raise LakeError("empty lake URI", fix="pass a directory path or a URI such as s3://bucket/lake")
    if "://" not in uri:
        root = os.path.abspath(os.path.expanduser(uri))
        if os.path.isfile(root):
            raise LakeError("lake root is a file", where=uri, fix="point the lake at a directory")
        return pafs.LocalFileSystem(), root.replace(os.sep, "/")
    scheme = uri.split("://", 1)[0]
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError, OSError) as arrow_err:
        fs, root = _resolve_fsspec(uri, scheme, arrow_err)
    root = root.rstrip("/") or "/"
    if isinstance(fs, pafs.LocalFileSystem):
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            raise LakeError("lake root is a file", where=uri, fix="point the lake at a directory")
    return fs, root


def _resolve_fsspec(uri: str, scheme: str, arrow_err: Exception) -> tuple[pafs.FileSystem, str]:
    import fsspec
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(uri)
    except ImportError as e:
        raise LakeError(
            f"pyarrow cannot open it ({arrow_err}) and the fsspec filesystem for {scheme!r} is not installed ({e})",
            where=uri,
            fix=f"install the fsspec implementation for {scheme}:// (for s3:// you may instead add ?region=… to the URI)",
        ) from e
    except (ValueError, TypeError, OSError) as e:
        known = ", ".join(sorted(fsspec.available_protocols())[:12])
        raise LakeError(
            f"unsupported lake URI ({arrow_err}; fsspec: {e})",
            where=uri,
            fix=f"use a local path, s3://bucket/prefix, gs://…, or an fsspec protocol ({known}, …)",
        ) from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root


def read_rollouts_shard(lake: Lake, shard: str, columns: list[str] | None = None) -> pa.Table:
    """One committed rollouts file (a shard of a run); a corrupted, truncated or vanished
    file is a LakeError naming it, not an Arrow traceback."""
    try:
        return lake.read_part(shard, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise unreadable_file(shard, e, lake.uri) from None
