"""Where generated code tokens sit in their syntax tree: MLCPD universal AST categories
(labeler: `labeler.py`; parsing: `tokenmill/code`)."""

from __future__ import annotations

from tokenmill.code.universal_ast import CATEGORIES
from tokenmill.labelers.ast.config import AstConfig
from tokenmill.labelers.family import LabelFamily, LabelScope, TokenOutput


def _build(cfg):
    from tokenmill.labelers.ast.labeler import AstLabeler

    return AstLabeler(cfg.ast)


# one fixed colour per category (MLCPD's and `type`), so a legend reads the same on every rollout
_PALETTE = ("#8dd3c7", "#fdb462", "#80b1d3", "#bebada", "#d9d9d9", "#ccebc5", "#ffffb3", "#9ecae1", "#c994c7",
            "#a1d99b", "#fdae6b", "#fb9a99", "#fb8072", "#ffed6f", "#b3de69", "#bc80bd", "#e5c494", "#fccde5", "#c7e9c0",
            "#f0f0f0")

FAMILY = LabelFamily(
    name="ast", title="syntax (AST)", config=AstConfig, tables=("ast_files", "ast_nodes", "ast_tokens"), build=_build,
    paper="MLCPD: A Unified Multi-Language Code Parsing Dataset with Universal AST Schema",
    scopes=(LabelScope("ast", "ast_tokens", where="node_id >= 0", title="AST", outputs=(
        TokenOutput("ast_category", "AST category", "categorical", "any_value(category)",
                    "universal category (MLCPD's groups and type) of the innermost syntax node the token starts in",
                    categories=dict(zip(CATEGORIES, _PALETTE, strict=True))),
        TokenOutput("ast_type", "AST node type", "categorical", "any_value(type)", detail=True),
    )),),
)
