"""Export parsed files in MLCPD's own layout, so MLCPD users load tokenmill output unchanged.

MLCPD: Gajjar et al., "MLCPD: A Unified Multi-Language Code Parsing Dataset with Universal
AST Schema" (2025). Matched against github.com/JugalGajjar/MultiLang-Code-Parser-Dataset at
commit 883fd7e7a62cf2f0e9163da0f4a43f15be800f9e: `parse_converter.py` (extract_ast_structure,
categorize_nodes_by_keywords, create_simple_cross_language_map,
convert_parquet_row_to_json), `schema.json`, `code_parser.py` (walk, parse_row) and
`clean_data_statistics_updater.py` (calculate_code_metrics).

One row per parsed file, with the dataset's columns: language, code, avg_line_length,
line_count, lang_specific_parse, ast_node_count, num_errors, universal_schema (a JSON
string). `universal_schema` is what `convert_parquet_row_to_json` writes: language,
success, metadata {lines, avg_line_length, nodes, errors, source_hash (SHA-256),
categorized_nodes}, ast {root, nodes: [{id, type, text, parent, children, start_point,
end_point}]}, node_categories, cross_language_map, original_source_code. As MLCPD's
converter does, the node list drops punctuation, keyword and wrapper nodes (`SKIP_TOKENS`,
`SKIP_NODE_TYPES`, docstrings, a declarator repeating its declaration) and hangs their
children on the nearest kept ancestor (as `parent`; that ancestor's `children` lists only
its own tree children, as MLCPD's recursion does); node categories are MLCPD's substring keyword
matching, in its order, on the lower-cased type (so, as in MLCPD, `identifier` lands in
conditionals because it contains "if"; tokenmill's own `category` column does not).

Where the values deliberately differ from MLCPD's converter (docs/USER_GUIDE.md):
  - node text slices the UTF-8 bytes; MLCPD slices the Python string with byte offsets,
    which shifts every node after a non-ASCII character;
  - metadata.errors is the number of ERROR nodes (what `num_errors` counts); MLCPD writes 0;
  - cross_language_map names come from the tree (the `name` field, or the end of the C/C++
    declarator chain; "unknown" when neither exists), not from splitting node text;
  - files go to one `<language>_parsed_1.parquet` per language (MLCPD splits each language
    into four parts).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake

MLCPD_REPO = "JugalGajjar/MultiLang-Code-Parser-Dataset"
MLCPD_COMMIT = "883fd7e7a62cf2f0e9163da0f4a43f15be800f9e"

# extract_ast_structure: a node whose stripped text is one of these is dropped ...
SKIP_TOKENS = frozenset({
    "(", ")", "{", "}", "[", "]", ",", ";", ":", ".", "->", "::", "...", "|", "&",
    "def", "class", "function", "var", "let", "const", "public", "private", "protected", "static",
    "if", "else", "for", "while", "return", "import", "from", "as", "export", "package",
    "try", "catch", "finally", "throw", "raise", "new", "delete", "sizeof", "typeof", "async", "await", "yield",
    "then", "do", "end", "begin",
})
# ... and so is a node of one of these types (its children are kept)
SKIP_NODE_TYPES = frozenset({
    "(", ")", "{", "}", "[", "]", ",", ";", ":", ".",
    "def", "class", "return", "if", "else", "elif", "for", "while", "import", "from", "as",
    "public", "private", "protected", "static", "const", "var", "let", "function",
    "try", "catch", "finally", "throw", "async", "await", "new", "delete",
    "comment", "string_content", "string_start", "string_end", "expression_statement", "block", "module",
    "dotted_name", "program", "block_comment", "class_body", '"', "string_fragment", "translation_unit",
    "compound_statement", "field_declaration_list", "compilation_unit", "declaration_list", "string_literal_content",
    "source_file", "interpreted_string_literal_content", "statement_block", "type_annotation", "/*", "template_body",
})

# categorize_nodes_by_keywords: the first group whose keywords occur in the lower-cased type
KEYWORD_RULES = (
    ("declarations", "functions", ("function", "method", "def ", "func ")),
    ("declarations", "classes", ("class", "struct", "interface", "trait", "union")),
    ("declarations", "imports", ("import", "include", "using", "require")),
    ("declarations", "modules", ("module", "namespace", "package", "export")),
    ("declarations", "enums", ("enum", "enumeration")),
    ("declarations", "variables", ("declaration", "definition", "variable", "var ")),
    ("statements", "returns", ("return",)),
    ("statements", "conditionals", ("if", "switch", "case", "conditional")),
    ("statements", "loops", ("for", "while", "loop")),
    ("statements", "exceptions", ("try", "except", "catch", "finally", "throw", "raise")),
    ("statements", "assignments", ("assignment", "assign")),
    ("statements", "expressions", ("expression",)),
    ("expressions", "calls", ("call", "invocation")),
    ("expressions", "binary_operations", ("binary", "arithmetic", "operator")),
    ("expressions", "unary_operations", ("unary",)),
    ("expressions", "member_access", ("member", "field", "property", "access", "dot")),
    ("expressions", "identifiers", ("identifier", "name", "symbol")),
    ("expressions", "literals", ("literal", "string", "number", "integer", "float", "boolean")),
)
# the key order MLCPD's dict literal gives node_categories
CATEGORY_KEYS = {
    "declarations": ("functions", "variables", "classes", "imports", "modules", "enums"),
    "statements": ("expressions", "assignments", "loops", "conditionals", "returns", "exceptions"),
    "expressions": ("calls", "literals", "identifiers", "binary_operations", "unary_operations", "member_access"),
}
# the dataset's `language` column spells C# as its source directory does; universal_schema as the parser
DATASET_LANGUAGE = {"c_sharp": "c-sharp"}
COLUMNS = pa.schema([
    pa.field("language", pa.string()), pa.field("code", pa.string()), pa.field("avg_line_length", pa.float64()),
    pa.field("line_count", pa.int64()), pa.field("lang_specific_parse", pa.string()),
    pa.field("ast_node_count", pa.int64()), pa.field("num_errors", pa.int64()),
    pa.field("universal_schema", pa.string()),
])


@lru_cache(maxsize=4096)
def mlcpd_category(node_type: str) -> tuple[str, str] | None:
    """(group, key) MLCPD files a node type under, or None (uncategorised)."""
    t = node_type.lower()
    return next(((g, k) for g, k, words in KEYWORD_RULES if any(w in t for w in words)), None)


def line_metrics(code: str) -> tuple[float, int]:
    """(avg_line_length, line_count) as MLCPD's `calculate_code_metrics` computes them,
    including its list edits during iteration: an empty line is removed (and the line after
    it then not looked at), and a line ending in a backslash is doubled into itself and
    replaces the line before it."""
    lines = code.strip().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "":
            lines.pop(i)
        if line.endswith("\\"):
            lines[i] = line[:-1] + line
            lines.pop(i - 1)
        i += 1
    if not lines:
        return 0.0, 0
    return round(sum(len(x) for x in lines) / len(lines), 2), len(lines)


def to_mlcpd(source: str, language: str, nodes: dict[str, np.ndarray]) -> dict:
    """One file as an MLCPD dataset row; `nodes` are its `ast_nodes` columns in node_id order
    (type, parent_id, depth, field_name, start_byte, end_byte, start/end row and col, is_error)."""
    data = source.encode()
    types = np.asarray(nodes["type"], dtype=object)
    parent = np.asarray(nodes["parent_id"], np.int64)
    start, end = np.asarray(nodes["start_byte"], np.int64), np.asarray(nodes["end_byte"], np.int64)
    n = len(types)
    if n == 0:
        raise TokenmillError("a parsed file has no nodes", fix="re-parse it: every tree has a root node")
    texts = [data[a:b].decode("utf-8", "replace") for a, b in zip(start.tolist(), end.tolist())]
    stripped = [t.strip() for t in texts]
    parent_type = np.where(parent >= 0, types[np.maximum(parent, 0)], None)
    keep = np.array([not _skipped(t, s, pt) for t, s, pt in zip(types.tolist(), stripped, parent_type.tolist())])
    # a dropped node's children hang on its nearest kept ancestor
    up = parent.copy()
    while True:
        lift = (up >= 0) & ~keep[np.maximum(up, 0)]
        if not lift.any():
            break
        up[lift] = parent[up[lift]]
    new_id = np.cumsum(keep) - 1
    kept = np.flatnonzero(keep)
    new_parent = np.where(up[kept] >= 0, new_id[np.maximum(up[kept], 0)], -1)
    # as MLCPD's traversal returns nothing for a dropped node, only a kept node's own tree
    # children are listed in its `children`; lifted grandchildren name it as parent only
    direct = (up[kept] == parent[kept]).tolist()
    children: list[list[int]] = [[] for _ in kept]
    for child, (p, d) in enumerate(zip(new_parent.tolist(), direct)):  # pre-order: each list comes out in order
        if p >= 0 and d:
            children[p].append(child)
    sr, sc, er, ec = (np.asarray(nodes[k])[kept].tolist() for k in ("start_row", "start_col", "end_row", "end_col"))
    ast_nodes = [{"id": j, "type": types[i], "text": texts[i], "parent": None if p < 0 else p, "children": children[j],
                  "start_point": {"row": sr[j], "column": sc[j]}, "end_point": {"row": er[j], "column": ec[j]}}
                 for j, (i, p) in enumerate(zip(kept.tolist(), new_parent.tolist()))]

    categories = {g: {k: [] for k in keys} for g, keys in CATEGORY_KEYS.items()}
    for j, i in enumerate(kept.tolist()):
        gk = mlcpd_category(types[i])
        if gk:
            categories[gk[0]][gk[1]].append(j)
    names = _tree_names(nodes, data)
    cross = {"function_declarations": [], "class_declarations": [], "import_statements": []}
    for key, kind in (("functions", "function"), ("classes", "class")):
        for j in categories["declarations"][key]:
            i = kept[j]
            if texts[i]:  # MLCPD leaves out declarations without text
                cross[f"{kind}_declarations"].append({"node_id": j, "universal_type": kind,
                                                      "name": names.get(int(i), "unknown"),
                                                      "text_snippet": texts[i][:100]})
    cross["import_statements"] = [{"node_id": j, "text": texts[kept[j]]} for j in categories["declarations"]["imports"]
                                  if texts[kept[j]]]
    n_categorised = sum(len(v) for g in categories.values() for v in g.values())

    depth = np.asarray(nodes["depth"]).tolist()
    # code_parser.walk: every node, anonymous ones included, indented by depth
    parse_text = "\n".join("  " * d + f'({t}) "' + x.replace("\n", "\\n") + '"'
                           for d, t, x in zip(depth, types.tolist(), texts))
    avg, lines = line_metrics(source)
    errors = int(np.asarray(nodes["is_error"]).sum())
    schema = {
        "language": language, "success": True,
        "metadata": {"lines": lines, "avg_line_length": avg, "nodes": len(ast_nodes), "errors": errors,
                     "source_hash": hashlib.sha256(data).hexdigest(), "categorized_nodes": n_categorised},
        "ast": {"root": types[0], "nodes": ast_nodes},
        "node_categories": categories, "cross_language_map": cross, "original_source_code": source,
    }
    return {"language": DATASET_LANGUAGE.get(language, language), "code": source, "avg_line_length": avg,
            "line_count": lines, "lang_specific_parse": parse_text, "ast_node_count": n,
            "num_errors": parse_text.count("(ERROR)"), "universal_schema": json.dumps(schema)}


def _skipped(node_type: str, text: str, parent_type: str | None) -> bool:
    if text in SKIP_TOKENS or node_type in SKIP_NODE_TYPES:
        return True
    if node_type == "string" and (text.startswith('"""') or text.startswith("'''")):
        return True
    # a declarator (type spec) inside its declaration repeats it
    return bool(text) and ((node_type == "variable_declarator" and parent_type in ("variable_declaration",
                                                                                    "lexical_declaration"))
                           or (node_type == "type_spec" and parent_type == "type_declaration"))


def _tree_names(nodes: dict[str, np.ndarray], data: bytes) -> dict[int, str]:
    """node → the text of its `name` child, or of the innermost of its `declarator` chain."""
    fields = np.asarray(nodes["field_name"], dtype=object)
    parent = np.asarray(nodes["parent_id"], np.int64)
    start, end = np.asarray(nodes["start_byte"]), np.asarray(nodes["end_byte"])
    name_of, decl_of = {}, {}
    for i in np.flatnonzero(fields == "name").tolist():
        name_of.setdefault(int(parent[i]), i)
    for i in np.flatnonzero(fields == "declarator").tolist():
        decl_of.setdefault(int(parent[i]), i)
    out = {}
    for node in set(name_of) | set(decl_of):
        target = name_of.get(node)
        if target is None:
            target = decl_of[node]
            while target in decl_of and target not in name_of:
                target = decl_of[target]
            target = name_of.get(target, target)
        out[node] = data[start[target]:end[target]].decode("utf-8", "replace")
    return out


_NODE_COLUMNS = ["file_id", "node_id", "parent_id", "depth", "type", "field_name", "is_error", "start_byte",
                 "end_byte", "start_row", "start_col", "end_row", "end_col"]


def export_mlcpd(lake: Lake, run_id: str, out_dir: str | Path, fmt: str = "parquet",
                 languages: list[str] | None = None) -> dict[str, int]:
    """Write a run's parsed files as MLCPD rows: `<language>_parsed_1.parquet` (or `.json`, a
    list of universal_schema objects as MLCPD's examples are) per language under `out_dir`.
    Returns rows written per language."""
    if fmt not in ("parquet", "json"):
        raise TokenmillError(f"unknown export format {fmt!r}", fix="use parquet or json")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TokenmillError(f"{out} is a file", fix="give a directory for the export (it is created if missing)")
    files = lake.read("ast_files", run_id, columns=["file_id", "path", "rollout_id", "block", "language", "source",
                                                    "skipped"])
    files = files.filter(pc.and_(pc.is_valid(files.column("language")), pc.is_null(files.column("skipped"))))
    if languages:
        from tokenmill.code.universal_ast import normalise_language

        wanted = [normalise_language(x) for x in languages]
        files = files.filter(pc.is_in(files.column("language"), pa.array(wanted)))
    if files.num_rows == 0:
        raise TokenmillError(f"run {run_id!r} has no parsed files" + (f" in {', '.join(languages)}" if languages else ""),
                             fix="parse code into it first: `tokenmill ast parse PATH --run-id RUN` or "
                                 "`tokenmill label --labelers ast`")
    no_source = files.filter(pc.is_null(files.column("source")))
    if no_source.num_rows:
        raise TokenmillError(f"run {run_id!r}: {no_source.num_rows} parsed file(s) have no source (parsed before "
                             "tokenmill kept it), so their node text cannot be exported",
                             fix="parse them again (`tokenmill ast parse` / `tokenmill label --labelers ast`): the "
                                 "new parse keeps the source")
    files = files.sort_by([("language", "ascending"), ("path", "ascending"), ("rollout_id", "ascending"),
                           ("block", "ascending")])
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for lang in sorted(set(files.column("language").to_pylist())):
        part = files.filter(pc.equal(files.column("language"), lang))
        fids = part.column("file_id")
        nodes = lake.read("ast_nodes", run_id, columns=_NODE_COLUMNS, filter=pc.field("file_id").isin(fids))
        nodes = nodes.sort_by([("file_id", "ascending"), ("node_id", "ascending")])
        cols = {c: nodes.column(c).to_numpy(zero_copy_only=False) for c in _NODE_COLUMNS}
        fid_col = cols["file_id"]
        starts = np.flatnonzero(np.r_[True, fid_col[1:] != fid_col[:-1]]) if len(fid_col) else np.zeros(0, np.int64)
        bounds = dict(zip(fid_col[starts].tolist(), zip(starts.tolist(), np.r_[starts[1:], len(fid_col)].tolist())))
        rows, seen = [], set()
        for fid, source in zip(fids.to_pylist(), part.column("source").to_pylist()):
            if fid in seen:  # one file parsed by two labeller configs is one file
                continue
            seen.add(fid)
            if fid not in bounds:
                raise TokenmillError(f"run {run_id!r}: file {fid} has no rows in ast_nodes",
                                     fix=f"run `tokenmill check --lake {lake.uri}` and parse it again")
            lo, hi = bounds[fid]
            rows.append(to_mlcpd(source, lang, {c: v[lo:hi] for c, v in cols.items()}))
        stem = out / f"{lang}_parsed_1"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows, schema=COLUMNS), stem.with_suffix(".parquet"))
        else:
            stem.with_suffix(".json").write_text("[" + ", ".join(r["universal_schema"] for r in rows) + "]",
                                                 encoding="utf-8")
        written[lang] = len(rows)
    return written
