"""Print the lake's table and column reference as markdown, generated from the code.

    python scripts/schema_reference.py > docs/TABLES.md

Tables, keys, `dedupe_on`, table descriptions and column types come from the registered
`TableSpec`s: those of `tokenmill/schema.py`, then those label families register when
they are imported (`tokenmill/labelers/<family>/`). A column's description is the
comment next to (or just above) its `pa.field(...)` line in the file that declares the
table; columns spread in from a shared list (`*_provenance`) take that list's comments.
`tests/test_schema_reference.py` fails when docs/TABLES.md differs from this output.
"""

from __future__ import annotations

import ast
import io
import sys
import textwrap
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "tokenmill"
COMMAND = "python scripts/schema_reference.py > docs/TABLES.md"


def load_tables():
    """The schema module and every registered TableSpec, in registration order."""
    sys.path.insert(0, str(REPO))
    from tokenmill import schema

    core = list(schema.TABLES)
    from tokenmill import labelers  # label families register their own tables on import

    labelers.families()
    return schema, core, list(schema.TABLES.values())


# ------------------------------------------------------------------ comments from source


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """line number → (comment text, whether the line holds only the comment)."""
    out: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            alone = not lines[row - 1][:col].strip()
            out[row] = (text, alone)
    return out


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_field_call(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "field"
            and bool(node.args) and _const(node.args[0]) is not None)


def _field_docs(nodes, comments, lines) -> dict[str, str]:
    """column name → description, for the pa.field calls among `nodes`."""
    docs: dict[str, str] = {}
    for call in nodes:
        parts = []
        row = call.lineno - 1  # comment-only lines right above the field
        above = []
        while row in comments and comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        parts += above
        for line in range(call.lineno, call.end_lineno + 1):  # a trailing comment on its lines
            if line in comments and not comments[line][1]:
                parts.append(comments[line][0])
        if parts:
            docs[_const(call.args[0])] = " ".join(parts)
    return docs


def _table_notes(call, comments, field_lines) -> list[str]:
    """Comment-only blocks inside a TableSpec(...) that do not sit above a column."""
    notes, block = [], []
    for line in range(call.lineno, call.end_lineno + 1):
        if line in comments and comments[line][1]:
            block.append(comments[line][0])
            continue
        if block and line not in field_lines:
            notes.append(" ".join(block))
        block = []
    return notes


class SourceInfo:
    """What the declaring files say about each table: column comments and notes."""

    def __init__(self):
        self.columns: dict[str, dict[str, str]] = {}  # table → column → description
        self.shared: dict[str, dict[str, str]] = {}  # file → column → description (module-level fields)
        self.notes: dict[str, list[str]] = {}
        self.file_of: dict[str, str] = {}
        self.view_docs: dict[str, str] = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            if "TableSpec(" not in source and "VIEWS" not in source:
                continue
            self._read(path, source)

    def _read(self, path: Path, source: str) -> None:
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(source)
        comments = _comments(source)
        lines = source.splitlines()
        specs = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "TableSpec"]
        inside: set[int] = set()
        for call in specs:
            name = next((_const(k.value) for k in call.keywords if k.arg == "name"), None)
            if name is None:
                continue
            fields = [n for n in ast.walk(call) if _is_field_call(n)]
            inside |= {id(f) for f in fields}
            field_lines = {line for f in fields for line in range(f.lineno, f.end_lineno + 1)}
            self.columns[name] = _field_docs(fields, comments, lines)
            self.notes[name] = _table_notes(call, comments, field_lines)
            self.file_of[name] = rel
        loose = [n for n in ast.walk(tree) if _is_field_call(n) and id(n) not in inside]
        self.shared[rel] = _field_docs(loose, comments, lines)
        if rel == "tokenmill/schema.py":
            self._read_views(tree, comments)

    def _read_views(self, tree, comments) -> None:
        for node in tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) else None)
            if getattr(target, "id", None) != "VIEWS" or not isinstance(node.value, ast.Dict):
                continue
            for key in node.value.keys:
                row, above = key.lineno - 1, []
                while row in comments and comments[row][1]:
                    above.insert(0, comments[row][0])
                    row -= 1
                if _const(key):
                    self.view_docs[_const(key)] = " ".join(above)

    def describe(self, table: str, column: str) -> str:
        if column in self.columns.get(table, {}):
            return self.columns[table][column]
        here = self.file_of.get(table)
        if here and column in self.shared.get(here, {}):
            return self.shared[here][column]
        return self.shared.get("tokenmill/schema.py", {}).get(column, "")


# ------------------------------------------------------------------ markdown


def type_name(t) -> str:
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}{', ' + t.tz if t.tz else ''}]"
    return {"halffloat": "float16", "float": "float32", "double": "float64"}.get(str(t), str(t))


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def codes(cols) -> str:
    return ", ".join(f"`{c}`" for c in cols)


def render() -> str:
    schema, core, specs = load_tables()
    info = SourceInfo()
    out = [
        "# Lake tables and columns",
        "",
        f"<!-- Generated from the code by `{COMMAND}`; do not edit by hand. -->",
        "",
        "Every table of the token lake, generated from the table specs in `tokenmill/schema.py` and",
        "those the label families register (`tokenmill/labelers/<family>/`). Schema version",
        f"{schema.SCHEMA_VERSION}. Each table lives under `<lake>/<table>/{schema.PARTITION_COLUMN}=<run>/part-<hash>.parquet`:",
        f"`{schema.PARTITION_COLUMN}` is the hive partition, a column of every DuckDB view but not of the files.",
        "**key** is a row's primary key; **dedupe on** is what a commit treats as already",
        "written (committing the same rows twice leaves one copy). Columns marked *no* under",
        "**null** are never null.",
        "",
        "Ids are content hashes (`prompt_id` of source and prompt text, `rollout_id` of prompt,",
        "model, sampling, seed and sample index; [ARCHITECTURE.md](ARCHITECTURE.md#keys) has the",
        "rules); `pos` is the 0-based index of a generated token. Every label row also carries",
        "`labeler`, `labeler_version`, `models` and `params` (JSON) and their hash `config_id`:",
        "labelling again with the same settings adds nothing, other settings add rows next to",
        "the old ones.",
        "",
        "| table | key | dedupe on | what |",
        "|---|---|---|---|",
    ]
    for spec in specs:
        out.append(f"| [`{spec.name}`](#{spec.name}) | {codes(spec.key)} | {codes(spec.dedupe_cols)} | {cell(spec.doc)} |")
    if schema.VIEWS:
        for name in schema.VIEWS:
            out.append(f"| [`{name}`](#{name}) (view) | | | {cell(info.view_docs.get(name, ''))} |")
    for spec in specs:
        where = "tokenmill/schema.py" if spec.name in core else info.file_of.get(spec.name, "a label family")
        out += ["", f"## {spec.name}", "", cell(spec.doc), "",
                f"Key {codes(spec.key)}; dedupe on {codes(spec.dedupe_cols)}. Declared in `{where}`."]
        for note in info.notes.get(spec.name, []):
            out += ["", cell(note[0].upper() + note[1:]) + ("" if note.endswith(".") else ".")]
        out += ["", "| column | type | null | description |", "|---|---|---|---|"]
        for f in spec.schema:
            out.append(f"| `{f.name}` | `{type_name(f.type)}` | {'yes' if f.nullable else 'no'} | "
                       f"{cell(info.describe(spec.name, f.name))} |")
    for name, sql in schema.VIEWS.items():
        doc = info.view_docs.get(name, "")
        out += ["", f"## {name}", "", "A view the DuckDB catalog creates over the tables" + (f": {cell(doc)}." if doc else "."),
                "", "```sql", textwrap.dedent(sql).strip(), "```"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
