"""Universal AST (after MLCPD: "A Unified Multi-Language Code Parsing Dataset with
Universal AST Schema"): tree-sitter parse trees of ten languages in one schema.

Per node: node_id (pre-order index), parent_id (−1 at the root), depth, tree-sitter
`type`, universal `category`, is_named, is_error, is_missing, field_name, start/end byte
and (row, column). Categories are MLCPD's groups:

  declarations  function, variable, class, import, module, enum
  statements    expression, assignment, loop, conditional, return, exception
  expressions   call, literal, identifier, binary_operation, unary_operation, member_access
  else          other (and every anonymous node: keywords, punctuation)

A category is decided once per (language, node kind) by ordered name rules (`RULES`),
so converting a tree costs one cursor walk plus array lookups. Per file: language, node
count, the *real* count of ERROR and MISSING nodes (MLCPD writes 0), a source hash, and
the names of functions, classes and imports.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tokenmill.errors import TokenmillError

# language → (grammar package, function returning the language pointer)
GRAMMARS = {
    "python": ("tree_sitter_python", "language"), "java": ("tree_sitter_java", "language"),
    "javascript": ("tree_sitter_javascript", "language"), "typescript": ("tree_sitter_typescript", "language_typescript"),
    "go": ("tree_sitter_go", "language"), "c": ("tree_sitter_c", "language"), "cpp": ("tree_sitter_cpp", "language"),
    "c_sharp": ("tree_sitter_c_sharp", "language"), "ruby": ("tree_sitter_ruby", "language"),
    "scala": ("tree_sitter_scala", "language"),
}
ALIASES = {"py": "python", "python3": "python", "js": "javascript", "jsx": "javascript", "node": "javascript",
           "ts": "typescript", "golang": "go", "c++": "cpp", "cxx": "cpp", "cc": "cpp", "hpp": "cpp",
           "c#": "c_sharp", "csharp": "c_sharp", "cs": "c_sharp", "rb": "ruby", "sc": "scala"}
EXTENSIONS = {".py": "python", ".java": "java", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
              ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript", ".go": "go", ".c": "c", ".h": "c",
              ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".cs": "c_sharp",
              ".rb": "ruby", ".scala": "scala", ".sc": "scala"}
CATEGORIES = ("function", "variable", "class", "import", "module", "enum", "expression", "assignment", "loop",
              "conditional", "return", "exception", "call", "literal", "identifier", "binary_operation",
              "unary_operation", "member_access", "other")

# ordered: the first rule whose pattern matches a named node's type decides its category
RULES = [
    ("other", r"(_body|_list|^block$|^body$|parameters?$|^comment$|^line_comment$|^block_comment$)"),
    ("call", r"call|invocation|^new_expression$|object_creation"),
    ("import", r"import|include|using_directive|^require|package_clause|use_declaration"),
    ("module", r"^(module|program|source_file|translation_unit|compilation_unit|namespace_declaration|"
               r"namespace_definition|package_declaration|file_scoped_namespace_declaration|compilation_unit)$"),
    ("enum", r"enum"),
    ("class", r"class|interface|struct|trait|object_definition|record_declaration"),
    ("function", r"function|method|constructor|lambda|arrow_function|func_literal|closure|^def$"),
    ("loop", r"^for|_for|while|^do_statement$|^do$|loop|foreach|until"),
    ("conditional", r"^if|_if|else|switch|case|^match|conditional|ternary|^when|unless|elif"),
    ("return", r"return|yield"),
    ("exception", r"try|catch|throw|raise|except|finally|rescue|ensure"),
    ("assignment", r"assignment|short_var_declaration"),
    ("variable", r"variable|lexical_declaration|field_declaration|var_declaration|const_declaration|"
                 r"let_declaration|val_definition|var_definition|^declaration$|init_declarator|property_declaration"),
    ("binary_operation", r"binary|boolean_operator|comparison_operator|infix"),
    ("unary_operation", r"unary|not_operator|prefix|postfix|update_expression"),
    ("member_access", r"member|^attribute$|field_access|selector_expression|field_expression|scoped_identifier|navigation"),
    ("literal", r"literal|string|integer|float|number|^true$|^false$|^null$|^none$|^nil$|char|boolean|decimal"),
    ("identifier", r"identifier|^name$|^constant$"),
    ("expression", r"expression"),
]
_RULES = [(cat, re.compile(pat)) for cat, pat in RULES]
CATEGORY_ID = {c: i for i, c in enumerate(CATEGORIES)}
_NAMED_CATEGORIES = {CATEGORY_ID["function"], CATEGORY_ID["class"], CATEGORY_ID["import"]}


def category_of(node_type: str, named: bool = True) -> str:
    if not named:
        return "other"
    return next((cat for cat, pat in _RULES if pat.search(node_type)), "other")


def normalise_language(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in GRAMMARS:
        raise TokenmillError(f"unsupported language {name!r}", fix=f"use one of {', '.join(GRAMMARS)} (or an alias: "
                                                                    f"{', '.join(sorted(ALIASES))})")
    return key


@dataclass(frozen=True)
class Grammar:
    language: str
    parser: object
    kinds: tuple  # kind id → type name
    categories: np.ndarray  # kind id → category id (anonymous kinds → other)
    named: np.ndarray  # kind id → is a named node kind
    fields: tuple  # field id → field name (0 → None)


@lru_cache(maxsize=None)
def grammar(language: str) -> Grammar:
    import tree_sitter as ts

    lang = normalise_language(language)
    module, fn = GRAMMARS[lang]
    try:
        pointer = getattr(importlib.import_module(module), fn)()
    except ImportError:
        raise TokenmillError(f"the tree-sitter grammar for {lang} is not installed", fix="pip install 'tokenmill[code]'") from None
    tl = ts.Language(pointer)
    # ERROR nodes report kind id 65535: they get the slot after the grammar's kinds
    kinds = tuple(tl.node_kind_for_id(i) or "" for i in range(tl.node_kind_count)) + ("ERROR",)
    cats = np.array([CATEGORY_ID[category_of(k, tl.node_kind_is_named(i))] for i, k in enumerate(kinds[:-1])]
                    + [CATEGORY_ID["other"]], np.int8)
    named = np.array([tl.node_kind_is_named(i) for i in range(len(kinds) - 1)] + [True], bool)  # ERROR is named
    fields = (None,) + tuple(tl.field_name_for_id(i) for i in range(1, tl.field_count + 1))
    return Grammar(lang, ts.Parser(tl), kinds, cats, named, fields)


@dataclass
class ParsedFile:
    language: str
    source_hash: str
    n_bytes: int
    nodes: dict[str, np.ndarray]  # column → [nodes]
    errors: int
    missing: int
    functions: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)


def parse(source: bytes, language: str) -> ParsedFile:
    """Parse `source` and convert its tree to the universal schema."""
    g = grammar(language)
    tree = g.parser.parse(source)
    check_missing = tree.root_node.has_error  # valid code has no ERROR/MISSING node: skip the per-node check
    cur = tree.walk()
    kind, fid, sb, eb, parent, depth, missing = [], [], [], [], [], [], []
    stack = [-1]
    names: dict[str, list[str]] = {"function": [], "class": [], "import": []}
    cats = g.categories
    error_kind = len(g.kinds) - 1
    while True:  # pre-order walk with one cursor: the one Python loop, once per node
        node = cur.node
        k = node.kind_id
        if k >= error_kind:
            k = error_kind
        i = len(kind)
        kind.append(k)
        fid.append(cur.field_id or 0)
        sb.append(node.start_byte)
        eb.append(node.end_byte)
        parent.append(stack[-1])
        depth.append(len(stack) - 1)
        if check_missing and node.is_missing:
            missing.append(i)
        c = cats[k]
        if c in _NAMED_CATEGORIES and g.named[k] and (stack[-1] < 0 or cats[kind[stack[-1]]] != c):
            _record_name(node, CATEGORIES[c], names, source)  # outermost of its kind: not a declarator inside
        if cur.goto_first_child():
            stack.append(i)
            continue
        while not cur.goto_next_sibling():
            if not cur.goto_parent():
                break
            stack.pop()
        else:
            continue
        break
    kind_a = np.array(kind, np.int32)
    start, end = np.array(sb, np.int64), np.array(eb, np.int64)
    is_missing = np.zeros(len(kind_a), bool)
    is_missing[missing] = True
    (sr, sc), (er, ec) = _rows_cols(source, start), _rows_cols(source, end)
    nodes = {
        "node_id": np.arange(len(kind), dtype=np.int32), "parent_id": np.array(parent, np.int32),
        "depth": np.array(depth, np.int32), "type": np.array(g.kinds, dtype=object)[kind_a],
        "category": np.array(CATEGORIES, dtype=object)[cats[kind_a]],
        "is_named": g.named[kind_a], "is_error": kind_a == error_kind, "is_missing": is_missing,
        "field_name": np.array(g.fields, dtype=object)[np.array(fid, np.int32)],
        "start_byte": start, "end_byte": end, "start_row": sr, "start_col": sc, "end_row": er, "end_col": ec,
    }
    return ParsedFile(g.language, hashlib.blake2b(source, digest_size=16).hexdigest(), len(source), nodes,
                      int(nodes["is_error"].sum()), int(is_missing.sum()),
                      names["function"], names["class"], names["import"])


def _rows_cols(source: bytes, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, byte column) of byte offsets, as tree-sitter's points: rows count newlines before."""
    newlines = np.flatnonzero(np.frombuffer(source, np.uint8) == 10)
    row = np.searchsorted(newlines, offsets, side="left")
    line_start = np.where(row > 0, newlines[np.maximum(row - 1, 0)] + 1 if len(newlines) else 0, 0)
    return row.astype(np.int32), (offsets - line_start).astype(np.int32)


def _record_name(node, category: str, names: dict, source: bytes) -> None:
    if category == "import":
        text = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
        names["import"].append(" ".join(text.split())[:200])
        return
    name = node.child_by_field_name("name")
    if name is None and category == "function":  # C/C++: the name sits in the declarator chain
        decl = node.child_by_field_name("declarator")
        while decl is not None and decl.child_by_field_name("declarator") is not None:
            decl = decl.child_by_field_name("declarator")
        name = decl
    if name is not None and name.end_byte - name.start_byte < 200:
        names[category].append(source[name.start_byte:name.end_byte].decode("utf-8", "replace"))


def innermost_named(nodes: dict[str, np.ndarray], n_bytes: int) -> np.ndarray:
    """[n_bytes] int32: the deepest named node covering each byte (−1 where none): named
    nodes painted in pre-order, so a child overwrites its parent."""
    owner = np.full(n_bytes, -1, np.int32)
    idx = np.flatnonzero(nodes["is_named"])
    for i, a, b in zip(idx, nodes["start_byte"][idx], nodes["end_byte"][idx]):  # per node, not per byte
        owner[a:b] = i
    return owner
