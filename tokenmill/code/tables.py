"""Universal-AST rows: `ast_files` and `ast_nodes` from parsed files, and the token → node
mapping of code inside completions (`ast_tokens`).

Token mapping: a completion's code block starts at character c0. Token j covers
completion characters [s_j, e_j); inside the block its first non-whitespace character f_j
(or s_j when it is all whitespace) is converted to a UTF-8 byte offset of the code (byte
lengths from code points, cumulative), and the token's node is the innermost named node
covering that byte (`universal_ast.innermost_named`). All per-token steps are array ops.

File ids hash everything that changes a file's rows: a rollout block's id is rollout,
block index, language, code and `CONVERTER_VERSION`; a source file's is path (its
extension picks the language), content hash and `CONVERTER_VERSION`. `ast_files` and
`ast_nodes` dedupe on the id, so the same code parsed the same way is stored once, and
relabelling with another language (or after a converter change) adds its own rows
instead of pointing new `ast_tokens` at the old parse's nodes.

Every parsed file keeps its code in `ast_files.source` (a rollout block's as much as a
source file's), and node offsets are UTF-8 byte offsets into it, so any node's text is
`source.encode()[start_byte:end_byte]` (`node_texts`).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from tokenmill import ids
from tokenmill.code.universal_ast import ParsedFile, innermost_named, normalise_language
from tokenmill.errors import TokenmillError
from tokenmill.schema import AST_FILES, AST_NODES

# bump when `universal_ast` converts a tree differently (categories, node columns, names):
# every file id changes with it, so new parses never dedupe against old ones
CONVERTER_VERSION = "2"  # 2: whole-word category rules, type category, wrappers; source kept
FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def code_blocks(completion: str, language: str | None, whole: bool) -> list[tuple[int, str, str | None, str | None]]:
    """[(char_start, code, language or None, reason if skipped)] of a completion: its fenced
    blocks (language from the fence tag, else `language`), or — with `whole` and no
    fence — the completion itself."""
    out = []
    for m in FENCE.finditer(completion):
        tag = m.group(1) or language
        lang, reason = None, None
        if not tag:
            reason = "no language: the fence has no tag and no default language was given"
        else:
            try:
                lang = normalise_language(tag)
            except TokenmillError:
                reason = f"unsupported language {tag!r}"
        out.append((m.start(2), m.group(2), lang, reason))
    if not out and whole and language:
        out.append((0, completion, normalise_language(language), None))
    return out


def utf8_offsets(text: str) -> np.ndarray:
    """[len(text) + 1] byte offset of each character (and of the end) in text.encode()."""
    cp = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    lens = 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000)
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def token_nodes(code: str, char_start: int, tok_start: np.ndarray, tok_end: np.ndarray, parsed: ParsedFile
                ) -> tuple[np.ndarray, np.ndarray]:
    """(mask of tokens inside the block, innermost named node of each such token)."""
    n = len(code)
    inside = (tok_end > char_start) & (tok_start < char_start + n) & (tok_end > tok_start)
    s = np.clip(tok_start[inside] - char_start, 0, n - 1 if n else 0)
    e = np.clip(tok_end[inside] - char_start, 0, n)
    nonws = ~np.array([c.isspace() for c in code], dtype=bool) if n else np.zeros(0, bool)  # per char of the block
    nxt = np.minimum.accumulate(np.where(nonws, np.arange(n), n)[::-1])[::-1] if n else np.zeros(0, np.int64)
    first = np.where(nxt[s] < e, nxt[s], s) if n else s
    byte = utf8_offsets(code)[first]
    owner = innermost_named(parsed.nodes, parsed.n_bytes)
    node = np.where(byte < parsed.n_bytes, owner[np.minimum(byte, max(parsed.n_bytes - 1, 0))], -1) if parsed.n_bytes else \
        np.full(len(byte), -1)
    return inside, node.astype(np.int32)


def file_row(file_id: str, parsed: ParsedFile | None, *, rollout_id=None, block=None, char_start=None, path=None,
             n_bytes: int = 0, skipped: str | None = None) -> dict:
    p = parsed
    return {"file_id": file_id, "rollout_id": rollout_id, "block": block, "char_start": char_start, "path": path,
            "language": p.language if p else None, "bytes": p.n_bytes if p else n_bytes,
            "nodes": len(p.nodes["node_id"]) if p else 0, "errors": p.errors if p else 0, "missing": p.missing if p else 0,
            "source_hash": p.source_hash if p else None, "functions": p.functions if p else [],
            "classes": p.classes if p else [], "imports": p.imports if p else [], "skipped": skipped,
            # source files are checked to be UTF-8 before parsing, rollout code is text: decoding is exact
            "source": p.source.decode("utf-8") if p else None}


def files_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=AST_FILES.schema)


def nodes_table(files: list[tuple[str, ParsedFile]]) -> pa.Table:
    """`ast_nodes` rows of several parsed files, concatenated column-wise."""
    if not files:
        return AST_NODES.schema.empty_table()
    cols = {k: np.concatenate([p.nodes[k] for _, p in files]) for k in files[0][1].nodes}
    lengths = [len(p.nodes["node_id"]) for _, p in files]
    cols["file_id"] = np.repeat(np.array([f for f, _ in files], dtype=object), lengths)
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in AST_NODES.schema}, schema=AST_NODES.schema)


def node_texts(source: str | bytes, start_byte: np.ndarray, end_byte: np.ndarray) -> list[str]:
    """The text of each node of a file, from `ast_files.source` and the nodes' byte offsets."""
    data = source.encode() if isinstance(source, str) else source
    return [data[a:b].decode("utf-8", "replace") for a, b in zip(start_byte.tolist(), end_byte.tolist())]


def rollout_file_id(rollout_id: str, block: int, language: str | None, code: str) -> str:
    """The id of a rollout's code block as parsed in `language` (None: skipped)."""
    return ids.content_id("ast-rollout", rollout_id, str(block), str(language), code, CONVERTER_VERSION)


def source_file_id(path: str, source_hash: str | None) -> str:
    return ids.content_id("ast-source", path, str(source_hash), CONVERTER_VERSION)
