"""Parse directories of source files into the lake (the MLCPD use case: a parsed corpus
in Parquet): `ast_files` and `ast_nodes` rows, language by file extension.

Files with a supported extension are read; one that cannot be read, holds NUL bytes
(binary) or is not UTF-8 is recorded in `ast_files` with `skipped` = the reason. Files
with other extensions are not code and are not recorded. Hidden directories (.git, …)
are not entered. Rows are committed in batches, so a crash loses at most one batch and
a re-run adds nothing already there (file ids hash the path and content).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

from tokenmill.code.tables import file_row, files_table, nodes_table, source_file_id
from tokenmill.code.universal_ast import EXTENSIONS, parse
from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake


def source_files(paths: list[str]) -> Iterator[tuple[Path, str]]:
    """(file, its path as recorded) for every file with a code extension under `paths`."""
    for root in paths:
        base = Path(root)
        if not base.exists():
            raise TokenmillError(f"no such file or directory: {root}", fix="give source files or directories")
        if base.is_file():
            yield base, base.name
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.suffix.lower() in EXTENSIONS:
                    yield p, str(p.relative_to(base.parent))


def parse_file(path: Path, rel: str) -> tuple[dict, tuple | None]:
    """(ast_files row, (file_id, parsed) or None when skipped)."""
    language = EXTENSIONS[path.suffix.lower()]
    try:
        data = path.read_bytes()
    except OSError as e:
        return file_row(source_file_id(rel, None), None, path=rel, skipped=f"unreadable: {e.strerror or e}"), None
    reason = None
    if b"\x00" in data:
        reason = "binary: contains NUL bytes"
    else:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not UTF-8 text (byte {e.start})"
    if reason:
        return file_row(source_file_id(rel, None), None, path=rel, n_bytes=len(data), skipped=reason), None
    parsed = parse(data, language)
    fid = source_file_id(rel, parsed.source_hash)
    return file_row(fid, parsed, path=rel), (fid, parsed)


def parse_tree(lake: Lake, run_id: str, paths: list[str], batch: int = 256,
               progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Parse every code file under `paths` into `run_id`; returns rows written per table."""
    written = {"ast_files": 0, "ast_nodes": 0}
    rows, parsed = [], []

    def flush() -> None:
        written["ast_nodes"] += lake.commit("ast_nodes", run_id, nodes_table(parsed)).rows_written
        written["ast_files"] += lake.commit("ast_files", run_id, files_table(rows)).rows_written
        rows.clear(), parsed.clear()

    for path, rel in source_files(paths):
        row, p = parse_file(path, rel)
        rows.append(row)
        if p:
            parsed.append(p)
        if progress:
            progress(1)
        if len(rows) >= batch:
            flush()
    if rows:
        flush()
    return written
