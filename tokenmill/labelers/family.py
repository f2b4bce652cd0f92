"""What a label family declares, in one place: the one object every consumer reads.

A *label family* is one labeler with everything the rest of tokenmill needs to know about
it: its config model, the lake tables it writes, the engine capabilities it asks for, and
its *token outputs* — one value per generated token, each with a kind and a colour rule.
Curation's `token_labels`, the viewer's labels and legend, the report's distribution
plots and the label summary are all generated from these declarations, so a family shows
up everywhere by declaring itself (`tokenmill/labelers/<family>/__init__.py`).

Terminology
  output   one value per token: `continuous` (a number), `categorical` (a category name)
           or `flag` (true/false); `scale` says how the viewer colours it
  scope    the rows of one table that share config ids (a reward kind of
           `token_rewards`, all of `critical`, …): the unit one labeller config is picked
           for. Two configs of one scope are never averaged; a reader picks one or asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from tokenmill.capabilities import (  # noqa: F401  (what `needs` names)
    ENTROPY, GENERATE, HIDDEN_STATES, LOGITS, NEXT_TOKEN_FEATURES, SCORE)


@dataclass(frozen=True)
class TokenOutput:
    """One value per token that a family writes.

    `expr` is an aggregate SQL expression over the scope's rows of one (rollout, position)
    (one config is picked, so it sees one row; spans may overlap, so span outputs take the
    most severe); `categories` (value → colour, in increasing severity) for categorical
    outputs. `detail` outputs are columns of curation and tooltips of the viewer, not
    labels to colour by."""

    name: str
    title: str
    kind: Literal["continuous", "categorical", "flag"]
    expr: str
    help: str = ""
    scale: Literal["sequential", "diverging", "categorical"] = "sequential"
    domain: tuple[float, float] | None = None
    reverse: bool = False
    categories: dict[str, str] = field(default_factory=dict)
    detail: bool = False

    def __post_init__(self):
        if self.kind == "categorical" and self.scale != "categorical":
            object.__setattr__(self, "scale", "categorical")


@dataclass(frozen=True)
class LabelScope:
    """Rows of `table` (filtered by `where`) whose config ids are picked together.

    The scope's per-token SQL is `sql` when given — a query over `{rows}` (the scope's rows
    of the picked config) and `{tokens}` (the run's generated tokens) returning rollout_id,
    pos and one column per output — else one row per (rollout_id, pos) of `{rows}` with each
    output's `expr`."""

    name: str
    table: str
    outputs: tuple[TokenOutput, ...]
    where: str = "TRUE"
    sql: str | None = None
    title: str = ""

    def per_token_sql(self) -> str:
        if self.sql:
            return self.sql
        cols = ", ".join(f"{o.expr} AS {o.name}" for o in self.outputs)
        return f"SELECT rollout_id, pos, {cols} FROM {{rows}} GROUP BY rollout_id, pos"


@dataclass(frozen=True)
class LabelFamily:
    """A labeler and everything tokenmill derives from it.

    `build(label_cfg)` makes the Labeler from the whole label config (its own settings are
    `getattr(label_cfg, name)`; `label_cfg.engine` / `engine_options` are the engine every
    model it loads should use where it has the capabilities); `summary` is optional extra SQL
    for the label summary (rows labeler, output, config_id, rows, rollouts, mean, flagged)."""

    name: str
    title: str
    paper: str
    config: type
    tables: tuple[str, ...]
    scopes: tuple[LabelScope, ...]
    build: Callable[[Any], Any]
    needs: frozenset[str] = frozenset()
    summary: str | None = None

    def outputs(self) -> list[TokenOutput]:
        return [o for s in self.scopes for o in s.outputs]
