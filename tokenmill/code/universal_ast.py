"""Universal AST (after MLCPD: Gajjar et al., "MLCPD: A Unified Multi-Language Code Parsing
Dataset with Universal AST Schema", 2025; code: github.com/JugalGajjar/MultiLang-Code-Parser-Dataset):
tree-sitter parse trees of ten languages in one schema.

Per node: node_id (pre-order index), parent_id (−1 at the root), depth, tree-sitter
`type`, universal `category`, is_named, is_error, is_missing, field_name, start/end byte
and (row, column). Per file: language, node count, the *real* count of ERROR and MISSING
nodes (MLCPD writes 0), a source hash, the names of functions, classes and imports, and
the source itself (`ast_files.source`), so every node's text is `source[start:end]` of
its UTF-8 bytes (`tables.node_texts`).

Categories are MLCPD's groups plus one:

  declarations  function, variable, class, import, module, enum
  statements    expression, assignment, loop, conditional, return, exception
  expressions   call, literal, identifier, binary_operation, unary_operation, member_access
  tokenmill     type (a type written in code: annotations, `int`, `List<T>`, type parameters)
  else          other (syntax glue: containers, comments, modifiers, annotations; and every
                anonymous node: keywords, punctuation)

A category is decided once per (language, node kind): `BY_LANGUAGE`, then `EXACT`, then
the ordered whole-word `RULES` (so `struct` cannot fire inside `constructor` nor `if`
inside `identifier`), so converting a tree costs one cursor walk plus array lookups. Two
refinements read the tree: a wrapper (`decorated_definition`, `template_declaration`)
takes the category of the definition it wraps, and a C/C++ declaration whose declarator
is a function declarator is a function. Where this deliberately differs from MLCPD's own
keyword matching (`mlcpd.py` reproduces that one for the export) is in docs/USER_GUIDE.md:
e.g. constructors are functions (MLCPD: classes), every package declaration is a module,
`with`/`using`/`defer` sit with exception handling, comprehensions are loops, collection
literals are literals, decorators are calls.
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
              "unary_operation", "member_access", "type", "other")


def _words(*alternatives: str) -> str:
    """Any of `alternatives` as whole `_`-separated words of a kind name."""
    return r"(?:^|_)(?:" + "|".join(alternatives) + r")(?:_|$)"


def _suffix(*alternatives: str) -> str:
    return r"(?:^|_)(?:" + "|".join(alternatives) + r")$"


def _same(category: str, *kinds: str) -> dict[str, str]:
    return dict.fromkeys(kinds, category)


# Kinds whose name says nothing, or the wrong thing, about what they are, in every grammar
# that has them; checked before the word rules.
EXACT = {
    **_same("function", "func_literal", "static_initializer", "class_static_block", "call_signature",
            "construct_signature", "indexer_declaration", "operator_declaration", "conversion_operator_declaration",
            "accessor_declaration", "operator_cast", "annotation_type_element_declaration"),
    **_same("identifier", "destructor_name", "operator_name", "constant", "self", "this", "super", "discard", "iota",
            "operator", "setter", "global_variable", "template_function", "template_method", "dependent_name",
            "shorthand_property_identifier_pattern"),
    # member, scope and element (index) access
    **_same("member_access", "attribute", "instance_variable", "class_variable", "method_reference", "class_literal",
            "scope_resolution", "conditional_access_expression", "optional_chain", "meta_property", "dotted_name",
            "subscript", "slice", "element_reference", "array_access"),
    # a type written in code (declaring a named type is "class")
    **_same("type", "type", "primitive_type", "predefined_type", "sized_type_specifier", "placeholder_type_specifier",
            "macro_type_specifier", "type_qualifier", "type_descriptor", "auto", "decltype", "generic_name",
            "dimensions", "array_rank_specifier", "tuple_element", "requires_clause", "requires_expression",
            "requirement_seq", "compound_requirement", "simple_requirement", "type_requirement",
            "constraint_conjunction", "constraint_disjunction", "concept_definition", "constraint", "asserts",
            "type_predicate", "type_query", "index_type_query", "mapped_type_clause", "constructor_constraint",
            "parameter_types", "abstract_array_declarator", "abstract_function_declarator",
            "abstract_pointer_declarator", "abstract_reference_declarator", "abstract_parenthesized_declarator",
            "pointer_type_declarator", "template_argument_list", "template_parameter_list", "new_declarator",
            "template_template_parameter_declaration", "explicit_interface_specifier", "type_lambda", "lower_bound",
            "upper_bound", "view_bound", "context_bound"),
    # declarations of named types
    **_same("class", "type_declaration", "type_spec", "type_alias", "type_alias_declaration", "type_alias_statement",
            "type_definition", "alias_declaration", "delegate_declaration", "struct_type", "interface_type",
            "friend_declaration", "permits", "implements_clause", "extends_clause", "extends_type_clause", "base_list",
            "derives_clause"),
    # a package / export says which module the file is; an import what it uses
    **_same("import", "dot", "asterisk", "namespace_alias_definition", "namespace_wildcard", "namespace_selectors",
            "using_declaration", "uses_module_directive"),
    **_same("module", "package_clause", "package_declaration", "exports_module_directive", "opens_module_directive",
            "provides_module_directive", "file_scoped_namespace_declaration"),
    **_same("enum", "enum_member_declaration"),
    # exception handling, and what stands for try/finally: with, using, defer, lock; assert raises
    **_same("exception", "with_statement", "with_clause", "with_item", "using_statement", "defer_statement",
            "lock_statement", "synchronized_statement", "resource", "resource_specification", "assert_statement",
            "static_assert_declaration", "seh_leave_statement", "begin", "rescue_modifier"),
    # comprehensions iterate; break / continue / next / redo steer a loop
    **_same("loop", "list_comprehension", "dictionary_comprehension", "set_comprehension", "generator_expression",
            "range_clause", "break_statement", "continue_statement", "break", "next", "redo", "while_modifier",
            "until_modifier"),
    **_same("conditional", "elsif", "in_clause", "fallthrough_statement", "condition_clause", "switch_body",
            "switch_block", "case_block", "indented_cases", "default_case", "if_modifier", "unless_modifier",
            "record_pattern_component"),
    # decorators are functions applied to the definition; `go` starts a call
    **_same("call", "decorator", "go_statement", "new_expression", "object_creation_expression",
            "anonymous_object_creation_expression", "implicit_object_creation_expression", "array_creation_expression",
            "instance_expression", "constructor_initializer", "print_statement", "exec_statement", "subshell"),
    **_same("assignment", "named_expression", "field_initializer", "assignment_pattern", "object_assignment_pattern",
            "destructured_left_assignment"),
    # definitions of names other than functions and types
    **_same("variable", "preproc_def", "preproc_define", "global_statement", "nonlocal_statement",
            "structured_binding_declarator", "event_declaration", "given_definition", "index_signature",
            "as_pattern_target", "bindings", "binding", "hash_splat_nil", "property_signature",
            "function_pointer_parameter", "class_parameter"),
    **_same("binary_operation", "boolean_operator", "comparison_operator", "range", "range_expression",
            "instanceof_expression"),
    **_same("unary_operation", "not_operator", "pointer_expression", "inc_statement", "dec_statement",
            "non_null_expression"),
    # collections, the parts of strings, markup, constants
    **_same("literal", "true", "false", "null", "none", "nil", "undefined", "ellipsis", "unit", "rational", "complex",
            "encoding", "line", "file", "uninterpreted", "list", "dictionary", "set", "tuple", "array", "hash",
            "object", "pair", "keyed_element", "initializer_list", "initializer_pair", "field_designator",
            "subscript_designator", "subscript_range_designator", "array_initializer",
            "element_value_array_initializer", "initializer_expression", "collection_expression",
            "collection_element", "implicit_array_creation_expression", "tuple_expression", "symbol_array",
            "escape_sequence", "escape_interpolation", "template_substitution", "format_specifier",
            "format_expression", "type_conversion", "template_expression", "heredoc_body"),
    **_same("expression", "await", "list_splat", "dictionary_splat", "parenthesized_list_splat", "splat_argument",
            "hash_splat_argument", "spread_element", "forward_argument", "variadic_argument",
            "parameter_pack_expansion", "send_statement", "receive_statement", "delete_statement",
            "computed_property_name", "from_clause", "where_clause", "select_clause", "group_clause", "join_clause",
            "join_into_clause", "let_clause", "order_by_clause", "with_initializer", "generic_function",
            "default_expression", "type_assertion"),
    # syntax glue; annotations and attributes are declarative metadata, nothing is evaluated
    **_same("other", "then", "argument", "class_parameters", "keyword_argument", "storage_class_specifier",
            "annotation", "marker_annotation", "element_value_pair", "ambient_declaration", "infix_modifier",
            "update_modifier", "explicit_function_specifier", "access_specifier", "virtual_specifier",
            "attribute_specifier", "attribute_target_specifier", "attribute_declaration", "preproc_call",
            "calling_convention", "ms_call_modifier",
            # wrappers: resolved per node to the category of what they wrap (`WRAPPERS`)
            "decorated_definition", "template_declaration"),
}

# A kind name that means different things in different grammars.
BY_LANGUAGE = {
    ("ruby", "block"): "function", ("ruby", "do_block"): "function", ("ruby", "in"): "loop", ("ruby", "do"): "loop",
    ("c", "attribute"): "other", ("cpp", "attribute"): "other", ("c_sharp", "attribute"): "other",
    ("c_sharp", "global_statement"): "other",  # a top-level statement, not Python's `global x`
    ("javascript", "with_statement"): "other", ("typescript", "with_statement"): "other",  # scope, not cleanup
    ("javascript", "using_declaration"): "variable", ("typescript", "using_declaration"): "variable",
    ("java", "wildcard"): "type", ("scala", "wildcard"): "identifier",
    # destructuring targets bind names; elsewhere these patterns test a value (match, case, is)
    **{(lang, k): "variable" for lang in ("javascript", "typescript")
       for k in ("object_pattern", "array_pattern", "rest_pattern", "pair_pattern")},
    **{("python", k): "variable" for k in ("tuple_pattern", "list_pattern", "pattern_list", "list_splat_pattern",
                                           "dictionary_splat_pattern", "as_pattern")},
}

# Ordered: the first pattern that matches a named kind's name decides (whole words only).
RULES = [
    ("other", _suffix("comment")),
    ("type", _suffix("type", "types", "type_annotation", "annotation") + "|" +
             _words("type_arguments?", "type_parameters?", "type_argument_list", "type_parameter_list", "type_bound",
                    "type_constraint", "type_parameter_constraints?", "type_elem", "type_list")),
    ("other", _suffix("body", "block", "list", "parameters", "arguments", "statements", "modifier", "modifiers",
                      "qualifier", "declarations")),
    ("literal", _words("literal", "string", "heredoc", "regex", "symbol", "jsx", "xml", "interpolation", "char",
                       "character")),
    ("member_access", _words("member", "field_access", "field_expression", "selector_expression", "navigation",
                             "scoped", "qualified", "nested_identifier", "nested_type_identifier", "stable_identifier",
                             "stable_type_identifier", "subscript", "element_access", "element_binding",
                             "index_expression", "slice_expression")),
    ("identifier", _suffix("identifier", "identifiers", "name")),
    ("conditional", _suffix("pattern", "pattern_clause", "subpattern")),
    ("call", _words("call", "invocation")),
    ("function", _words("function", "method", "constructor", "destructor", "lambda", "closure", "def",
                        "arrow_function", "signature", "method_elem")),
    ("import", _words("import", "imports", "include", "require", "requires", "using_directive", "use_declaration",
                      "extern_alias_directive")),
    ("module", _words("module", "namespace", "package", "export", "program", "source_file", "translation_unit",
                      "compilation_unit")),
    ("enum", _words("enum", "enumerator", "enumerators", "enumeration")),
    ("class", _words("class", "struct", "interface", "trait", "union", "record", "object_definition",
                     "singleton_class", "extension_definition", "superclass", "super_interfaces", "extends_interfaces",
                     "heritage", "base_class_clause", "annotation_type_declaration")),
    ("exception", _words("try", "catch", "throw", "throws", "raise", "except", "finally", "rescue", "ensure",
                         "exceptions", "exception_variable", "retry", "noexcept")),
    ("return", _words("return", "yield")),
    ("loop", _words("for", "foreach", "while", "until", "do", "loop")),
    ("conditional", _words("if", "ifdef", "else", "elif", "elifdef", "elsif", "switch", "case", "cases", "match",
                           "conditional", "ternary", "when", "unless", "guard", "select")),
    ("assignment", _words("assignment", "assign", "short_var_declaration")),
    ("variable", _words("variable", "declaration", "declarator", "var", "val", "let", "const", "spec", "field",
                        "property", "parameter", "definition", "designation")),
    ("binary_operation", _words("binary", "infix", "comma")),
    ("unary_operation", _words("unary", "prefix", "postfix", "update")),
    ("literal", _words("integer", "float", "number", "boolean")),
    ("expression", _words("expression", "expressions", "expr")),
]
_RULES = [(cat, re.compile(pat)) for cat, pat in RULES]
CATEGORY_ID = {c: i for i, c in enumerate(CATEGORIES)}
_NAMED_CATEGORIES = {CATEGORY_ID["function"], CATEGORY_ID["class"], CATEGORY_ID["import"]}
# kinds that wrap one definition and take its category: decorators, template<…> headers
WRAPPERS = ("decorated_definition", "template_declaration")
# C/C++ declarations that are functions when their declarator is a function declarator
_DECLARATIONS = ("declaration", "field_declaration")
assert all(c in CATEGORY_ID for c in EXACT.values()) and all(c in CATEGORY_ID for c in BY_LANGUAGE.values())


def category_of(node_type: str, named: bool = True, language: str | None = None) -> str:
    """The universal category of a node kind (before the per-node wrapper refinements)."""
    if not named:
        return "other"
    if language is not None and (language, node_type) in BY_LANGUAGE:
        return BY_LANGUAGE[(language, node_type)]
    if node_type in EXACT:
        return EXACT[node_type]
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
    wrapper: np.ndarray  # kind id → takes the category of the definition it wraps
    declaration: np.ndarray  # kind id → a C/C++ declaration (function when its declarator is one)
    function_declarator: np.ndarray  # kind id → function_declarator
    parenthesized_declarator: np.ndarray  # kind id → parenthesized_declarator
    declarator_field: int  # field id of `declarator` (0: the grammar has none)


def _language(lang: str):
    import tree_sitter as ts

    module, fn = GRAMMARS[lang]
    try:
        pointer = getattr(importlib.import_module(module), fn)()
    except ImportError:
        raise TokenmillError(f"the tree-sitter grammar for {lang} is not installed", fix="pip install 'tokenmill[code]'") from None
    return ts.Language(pointer)


@lru_cache(maxsize=None)
def grammar(language: str) -> Grammar:
    import tree_sitter as ts

    lang = normalise_language(language)
    tl = _language(lang)
    # ERROR nodes report kind id 65535: they get the slot after the grammar's kinds
    kinds = tuple(tl.node_kind_for_id(i) or "" for i in range(tl.node_kind_count)) + ("ERROR",)
    named = np.array([tl.node_kind_is_named(i) for i in range(len(kinds) - 1)] + [True], bool)  # ERROR is named
    cats = np.array([CATEGORY_ID[category_of(k, named[i], lang)] for i, k in enumerate(kinds[:-1])]
                    + [CATEGORY_ID["other"]], np.int8)
    fields = (None,) + tuple(tl.field_name_for_id(i) for i in range(1, tl.field_count + 1))
    kind_names = np.array(kinds, dtype=object)
    c_like = lang in ("c", "cpp")
    return Grammar(lang, ts.Parser(tl), kinds, cats, named, fields,
                   wrapper=np.isin(kind_names, WRAPPERS) & named,
                   declaration=np.isin(kind_names, _DECLARATIONS) & named & c_like,
                   function_declarator=(kind_names == "function_declarator") & named,
                   parenthesized_declarator=(kind_names == "parenthesized_declarator") & named,
                   declarator_field=fields.index("declarator") if "declarator" in fields else 0)


def named_kinds(language: str) -> list[str]:
    """The grammar's distinct named, visible node kinds (what node-types.json lists as named)."""
    tl = _language(normalise_language(language))
    return sorted({tl.node_kind_for_id(i) for i in range(tl.node_kind_count)
                   if tl.node_kind_is_named(i) and tl.node_kind_is_visible(i)})


def other_share(language: str) -> tuple[int, int]:
    """(named kinds of the grammar, how many of them fall into "other")."""
    lang = normalise_language(language)
    kinds = named_kinds(lang)
    return len(kinds), sum(category_of(k, True, lang) == "other" for k in kinds)


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
    source: bytes = b""  # the parsed bytes: node text = source[start_byte:end_byte]


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
    parent_a = np.array(parent, np.int32)
    fid_a = np.array(fid, np.int32)
    start, end = np.array(sb, np.int64), np.array(eb, np.int64)
    is_missing = np.zeros(len(kind_a), bool)
    is_missing[missing] = True
    (sr, sc), (er, ec) = _rows_cols(source, start), _rows_cols(source, end)
    cat_a = _refine(g, kind_a, parent_a, fid_a, cats[kind_a].astype(np.int8))
    nodes = {
        "node_id": np.arange(len(kind), dtype=np.int32), "parent_id": parent_a,
        "depth": np.array(depth, np.int32), "type": np.array(g.kinds, dtype=object)[kind_a],
        "category": np.array(CATEGORIES, dtype=object)[cat_a],
        "is_named": g.named[kind_a], "is_error": kind_a == error_kind, "is_missing": is_missing,
        "field_name": np.array(g.fields, dtype=object)[fid_a],
        "start_byte": start, "end_byte": end, "start_row": sr, "start_col": sc, "end_row": er, "end_col": ec,
    }
    return ParsedFile(g.language, hashlib.blake2b(source, digest_size=16).hexdigest(), len(source), nodes,
                      int(nodes["is_error"].sum()), int(is_missing.sum()),
                      names["function"], names["class"], names["import"], bytes(source))


def _refine(g: Grammar, kind: np.ndarray, parent: np.ndarray, fid: np.ndarray, cat: np.ndarray) -> np.ndarray:
    """Per-node categories the kind alone cannot decide (see the module docstring)."""
    has_parent = parent >= 0
    if g.declarator_field and g.declaration.any():
        fn = has_parent & (fid == g.declarator_field) & g.function_declarator[kind]
        fn &= g.declaration[kind[np.maximum(parent, 0)]]
        # `int (*fp)(int);` declares a pointer to a function: its function declarator wraps a parenthesised one
        wrapped = has_parent & (fid == g.declarator_field) & g.parenthesized_declarator[kind]
        fn[parent[wrapped]] = False
        cat[parent[fn]] = CATEGORY_ID["function"]
    wrap = np.flatnonzero(g.wrapper[kind])
    if len(wrap):
        other = CATEGORY_ID["other"]
        candidate = np.flatnonzero(has_parent & g.named[kind] & ((cat != other) | g.wrapper[kind]))
        last = np.full(len(kind), -1, np.int64)
        np.maximum.at(last, parent[candidate], candidate)  # siblings come in order: the max is the last child
        for i in wrap[::-1]:  # innermost first, so a wrapper inside a wrapper is resolved before its parent reads it
            if last[i] >= 0:
                cat[i] = cat[last[i]]
    return cat


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
    if name is None and category == "class":  # Go `type (A struct{}; B int)`, C `typedef struct S {…} T`
        for child in node.named_children:
            inner = child.child_by_field_name("name")
            if inner is not None and inner.end_byte - inner.start_byte < 200:
                names["class"].append(source[inner.start_byte:inner.end_byte].decode("utf-8", "replace"))
        return
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
