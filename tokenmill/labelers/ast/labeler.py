"""AST labels of code in rollouts (MLCPD's universal schema, `code/universal_ast.py`).

For each rollout, code comes from its fenced blocks (language from the fence tag, else
`language`) or, when it has no fence, from the whole completion if

  - its world is one of `whole_completion_worlds` (default: code, humaneval — a base
    model's HumanEval continuation is an indented function body, which tree-sitter parses
    as a module of the body's statements, without error nodes), or
  - it comes from a file source (no world) and `language` was given (`--code-language`):
    a file of code tasks answers in bare code, and naming the language says so. Without
    `language` nothing says such a completion is code rather than prose, so it is left
    alone; the other built-in worlds (arithmetic, bios) answer in prose and are never
    parsed whole.

Every block is parsed with tree-sitter and converted to the universal schema →
`ast_files`, `ast_nodes`; every generated token inside a block gets the innermost named
node it starts in → `ast_tokens` (`code/tables.py` for the character → byte → node
mapping, correct for non-ASCII code, and for file ids: a block parsed in another language
is another file). Each block's code is kept in `ast_files.source`, so every node's text is
recoverable from the lake without the rollout.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.code.tables import code_blocks, file_row, files_table, nodes_table, rollout_file_id, token_nodes
from tokenmill.code.universal_ast import parse

PYTHON_WORLDS = ("code", "humaneval")  # worlds whose unfenced (or untagged) code is Python
from tokenmill.labelers.ast.config import AstConfig
from tokenmill.schema import AST_TOKENS
from tokenmill.storage.lake import Lake
from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard


class AstLabeler(Labeler):
    name = "ast"
    # 2: file ids hash language and code; file sources' bare code parsed with a given language
    # 3: whole-word category rules and the `type` category (CONVERTER_VERSION 2); ast_files keeps the source
    version = "3"

    def __init__(self, config: AstConfig | None = None):
        self.cfg = config or AstConfig()

    def params(self) -> dict:
        return self.cfg.model_dump()

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        cid = config_id(self.name, self.version, {}, self.params())
        if is_done(lake, run_id, cid, shard):
            return {"ast_files": 0, "ast_nodes": 0, "ast_tokens": 0}
        rollouts = read_rollouts_shard(lake, shard, ["rollout_id", "world", "completion"])
        tokens = lake.read("tokens", run_id, columns=["rollout_id", "pos", "char_start", "char_end"],
                           filter=pc.field("rollout_id").isin(rollouts.column("rollout_id")))
        files, nodes, toks = self.label(rollouts, tokens)
        written = {"ast_files": lake.commit("ast_files", run_id, files).rows_written,
                   "ast_nodes": lake.commit("ast_nodes", run_id, nodes).rows_written,
                   "ast_tokens": lake.commit("ast_tokens", run_id, toks).rows_written}
        mark_done(lake, run_id, cid, shard)
        return written

    def label(self, rollouts: pa.Table, tokens: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
        """(ast_files, ast_nodes, ast_tokens) of the rollouts' code."""
        tokens = tokens.sort_by([("rollout_id", "ascending"), ("pos", "ascending")])
        rid_col = tokens.column("rollout_id").to_numpy(zero_copy_only=False)
        bounds = {}
        if len(rid_col):
            starts = np.flatnonzero(np.r_[True, rid_col[1:] != rid_col[:-1]])
            bounds = dict(zip(rid_col[starts], zip(starts, np.r_[starts[1:], len(rid_col)])))
        t_pos, t_s, t_e = (tokens.column(c).to_numpy() for c in ("pos", "char_start", "char_end"))
        file_rows, parsed_files, tok_parts = [], [], []
        for rid, world, text in zip(*(rollouts.column(c).to_pylist() for c in ("rollout_id", "world", "completion"))):
            whole = world in self.cfg.whole_completion_worlds or (world is None and self.cfg.language is not None)
            language = self.cfg.language or ("python" if world in PYTHON_WORLDS else None)
            for b, (c0, code, lang, reason) in enumerate(code_blocks(text or "", language, whole)):
                fid = rollout_file_id(rid, b, lang, code)
                if reason:
                    file_rows.append(file_row(fid, None, rollout_id=rid, block=b, char_start=c0,
                                              n_bytes=len(code.encode()), skipped=reason))
                    continue
                parsed = parse(code.encode(), lang)
                file_rows.append(file_row(fid, parsed, rollout_id=rid, block=b, char_start=c0))
                parsed_files.append((fid, parsed))
                lo, hi = bounds.get(rid, (0, 0))
                inside, node = token_nodes(code, c0, t_s[lo:hi], t_e[lo:hi], parsed)
                tok_parts.append((rid, fid, t_pos[lo:hi][inside], node, parsed))
        return files_table(file_rows), nodes_table(parsed_files), self._tokens_table(tok_parts)

    def _tokens_table(self, parts) -> pa.Table:
        n = sum(len(p[2]) for p in parts)
        if n == 0:
            return AST_TOKENS.schema.empty_table()
        node = np.concatenate([p[3] for p in parts])
        cols = {"type": [], "category": [], "depth": []}
        for _, _, pos, nd, parsed in parts:  # per file: gather the node attributes of its tokens
            ok = nd >= 0
            for k, col in (("type", "type"), ("category", "category"), ("depth", "depth")):
                vals = np.full(len(nd), None, dtype=object)
                vals[ok] = parsed.nodes[col][nd[ok]]
                cols[k].append(vals)
        lengths = [len(p[2]) for p in parts]
        return pa.table({
            "rollout_id": pa.array(np.repeat(np.array([p[0] for p in parts], dtype=object), lengths), pa.string()),
            "pos": pa.array(np.concatenate([p[2] for p in parts]), pa.int32()),
            "file_id": pa.array(np.repeat(np.array([p[1] for p in parts], dtype=object), lengths), pa.string()),
            "node_id": pa.array(node, pa.int32()),
            "type": pa.array(np.concatenate(cols["type"]), pa.string()),
            "category": pa.array(np.concatenate(cols["category"]), pa.string()),
            "depth": pa.array(np.concatenate(cols["depth"]), pa.int32()),
            **provenance(n, self.name, self.version, {}, self.params()),
        }, schema=AST_TOKENS.schema)
