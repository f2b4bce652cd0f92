"""Label families: the registry every consumer of labels reads.

Each subpackage `tokenmill/labelers/<family>/` is one family: its `__init__.py` defines
`FAMILY`, a `family.LabelFamily` (config model, tables, engine needs, token outputs, how to
build its labeler). The registry finds them by listing this package, so adding a family
is adding its package: curation (`token_labels`), the viewer, the report plots and the
label summary all read `FAMILIES`.

Reading a family's values always picks one labeller config per scope (`pick_configs`):
with several, a reader names one (`configs`) or is refused — two labellings of the same
tokens are never averaged.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from tokenmill.errors import TokenmillError
from tokenmill.labelers.family import LabelFamily, LabelScope, TokenOutput


@lru_cache(maxsize=1)
def _discover() -> dict[str, LabelFamily]:
    found: dict[str, LabelFamily] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        fam = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(fam, LabelFamily):
            found[fam.name] = fam
    return dict(sorted(found.items(), key=lambda kv: (_ORDER.index(kv[0]) if kv[0] in _ORDER else len(_ORDER), kv[0])))


# the families tokenmill started with keep their historical order (viewer menus, summaries);
# any other family follows by name
_ORDER = ("rewards", "critical", "routing", "hallucination", "ast")


def families() -> dict[str, LabelFamily]:
    """name → family, every family installed."""
    return _discover()


def family(name: str) -> LabelFamily:
    fams = families()
    if name not in fams:
        raise TokenmillError(f"unknown labeler {name!r}", fix=f"choose from {', '.join(fams)}")
    return fams[name]


def build_labeler(name: str, cfg):
    """The labeler `name` for a LabelConfig."""
    return family(name).build(cfg)


def scopes() -> list[tuple[LabelFamily, LabelScope]]:
    return [(f, s) for f in families().values() for s in f.scopes]


def outputs() -> list[tuple[LabelFamily, LabelScope, TokenOutput]]:
    return [(f, s, o) for f, s in scopes() for o in s.outputs]


def scope_of_output(name: str) -> tuple[LabelFamily, LabelScope]:
    for f, s, o in outputs():
        if o.name == name:
            return f, s
    raise KeyError(name)


def _rows_sql(scope: LabelScope, cfg_param: str, one_rollout: bool) -> str:
    rid = " AND rollout_id = $rid" if one_rollout else ""
    return (f"SELECT * FROM {scope.table} WHERE run_id = $run AND list_contains(${cfg_param}, config_id) "
            f"AND ({scope.where}){rid}")


def scope_sql(scope: LabelScope, cfg_param: str, one_rollout: bool = False, suffix: str = "") -> tuple[str, str]:
    """(CTE definitions, CTE name) of a scope's per-token values for the configs (a list)
    `$<cfg_param>`:
    one row per (rollout_id, pos). `one_rollout` restricts to `$rid`."""
    rows, tokens, name = f"rows_{scope.name}{suffix}", f"tok_{scope.name}{suffix}", f"lab_{scope.name}{suffix}"
    rid = " AND rollout_id = $rid" if one_rollout else ""
    body = scope.per_token_sql().format(rows=rows, tokens=tokens)
    ctes = (f"{rows} AS ({_rows_sql(scope, cfg_param, one_rollout)}),\n"
            f"{tokens} AS (SELECT rollout_id, pos FROM tokens WHERE run_id = $run{rid}),\n"
            f"{name} AS ({body})")
    return ctes, name


class Found(dict):
    """scope → the run's config ids in it; `overlapping`: the scopes where some rollout has
    rows of two configs (only there would reading them together average two labellings —
    critical's configs differ per policy, one config per model's rollouts)."""

    overlapping: set = set()


def configs_in(fetch, run: str) -> Found:
    """scope name → the run's config ids in it (sorted); scopes without rows left out.
    `fetch(sql, binds)` runs a query over the lake's views and returns its rows as dicts
    (curation uses the catalog, the viewer its own read-only connection)."""
    parts = [f"SELECT '{s.name}' AS scope, rollout_id, config_id FROM {s.table} WHERE run_id = $run AND ({s.where})"
             for _, s in scopes()]
    sql = f"""WITH c AS (SELECT DISTINCT scope, rollout_id, config_id FROM ({' UNION ALL '.join(parts)}))
              SELECT scope, config_id, bool_or(n > 1) AS shared FROM (
                  SELECT scope, config_id, count(*) OVER (PARTITION BY scope, rollout_id) AS n FROM c)
              GROUP BY ALL ORDER BY 1, 2"""
    out = Found()
    out.overlapping = set()
    for row in fetch(sql, {"run": run}):
        out.setdefault(row["scope"], []).append(row["config_id"])
        if row["shared"]:
            out.overlapping.add(row["scope"])
    return out


class AmbiguousConfig(TokenmillError):
    """A scope with several labeller configs and none picked."""

    def __init__(self, who: str, run: str, scope: str, found: list[str], how: str):
        self.scope, self.found = scope, found
        super().__init__(f"{who}: run {run!r} has {len(found)} {scope} configs ({', '.join(found)}); "
                         "reading them together would average them",
                         fix=f"pick one with {how}=<config id>[,<config id of another scope>…]")


def parse_picks(chosen) -> set[str]:
    """Config ids named by a user: a comma-separated string or a list."""
    if not chosen:
        return set()
    items = chosen.split(",") if isinstance(chosen, str) else list(chosen)
    return {c.strip() for c in items if c and c.strip()}


def pick_configs(found: dict[str, list[str]], chosen, who: str, run: str, used=None,
                 strict: bool = True, how: str = "--param configs") -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(scope → the configs to read, scope → the configs to ask between).

    A scope with one config reads it, and so does one whose configs label disjoint rollouts
    (`Found.overlapping`: none of its tokens has two values); otherwise the one named in
    `chosen`; naming two of one scope is an error. `used` limits the scopes considered. With `strict` an
    unpicked scope of several configs raises `AmbiguousConfig` (curation); otherwise it is
    returned to ask about (the viewer shows a choice, not an average)."""
    picks = parse_picks(chosen)
    known = {c for ids in found.values() for c in ids}
    unknown = sorted(picks - known)
    if unknown:
        raise TokenmillError(f"{who}: config {', '.join(unknown)} is not a labeller config of run {run!r}",
                             fix="configs of the run: " + (", ".join(f"{s}: {', '.join(c)}" for s, c in found.items())
                                                           or "none"))
    chosen_by_scope, ask = {}, {}
    for scope, ids in found.items():
        if used is not None and scope not in used:
            continue
        named = [c for c in ids if c in picks]
        if len(named) > 1:
            raise TokenmillError(f"{who}: configs names {len(named)} {scope} configs ({', '.join(named)})",
                                 fix="name one config per scope")
        if named:
            chosen_by_scope[scope] = named
        elif len(ids) == 1 or scope not in getattr(found, "overlapping", set(found)):
            chosen_by_scope[scope] = list(ids)
        elif strict:
            raise AmbiguousConfig(who, run, scope, ids, how)
        else:
            ask[scope] = ids
    return chosen_by_scope, ask


def token_labels_sql(picked: dict[str, str], names: list[str] | None = None, one_rollout: bool = False
                     ) -> tuple[str, dict[str, str]]:
    """One row per generated token of the run (`$run`; `$rid` with `one_rollout`): tokens'
    own columns and, of each picked scope, its outputs (only `names` where given). Returns
    the SQL and its config parameters."""
    ctes, joins, cols, params = [], [], [], {}
    for i, (_, scope) in enumerate(scopes()):
        if scope.name not in picked:
            continue
        want = [o.name for o in scope.outputs if names is None or o.name in names]
        if not want:
            continue
        param = f"cfg_{i}"
        params[param] = picked[scope.name]
        cte, name = scope_sql(scope, param, one_rollout)
        ctes.append(cte)
        joins.append(f"LEFT JOIN {name} ON {name}.rollout_id = t.rollout_id AND {name}.pos = t.pos")
        cols += [f"{name}.{n}" for n in want]
    # outputs of scopes without a config in the run: NULL columns, so an expression over them reads as "no label"
    for _, _, o in outputs():
        if (names is None or o.name in names) and not any(c.endswith(f".{o.name}") for c in cols):
            cols.append(f"NULL::{'VARCHAR' if o.kind == 'categorical' else 'BOOLEAN' if o.kind == 'flag' else 'DOUBLE'} "
                        f"AS {o.name}")
    rid = " AND t.rollout_id = $rid" if one_rollout else ""
    with_ = ("WITH " + ",\n".join(ctes) + "\n") if ctes else ""
    sql = (f"{with_}SELECT t.rollout_id, t.pos, t.token_id, t.logprob, t.entropy, t.char_start, t.char_end"
           f"{''.join(', ' + c for c in cols)}\nFROM tokens t {' '.join(joins)}\nWHERE t.run_id = $run{rid}")
    return sql, params


def scope_values_sql(scope: LabelScope, config_ids: list[str]) -> str:
    """The per-token values of configs of a scope over the whole run (`$run`): a full
    query, one row per (rollout_id, pos) with the scope's output columns."""
    cte, name = scope_sql(scope, "cfg")
    return f"WITH {cte.replace('$cfg', '[' + ', '.join(map(_quote, config_ids)) + ']')} SELECT * FROM {name}"


def config_groups(found: Found, scope: str) -> list[list[str]]:
    """What a summary or a plot reads of a scope as one: each config alone where configs
    share rollouts, else all of them together (they label disjoint rollouts)."""
    ids = found.get(scope, [])
    if not ids:
        return []
    return [[c] for c in ids] if scope in getattr(found, "overlapping", set(found)) else [list(ids)]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def summary_sql(found: dict[str, list[str]]) -> str | None:
    """The label summary over every (scope, config) of a run: per output and config, the
    tokens labelled, their rollouts, the mean (continuous), the share true (flag) or each
    category's share of tokens (categorical). Columns: labeler, output, config_id, rows (tokens),
    rollouts, mean, flagged. Details (`TokenOutput.detail`) are left out."""
    parts = []
    for fam, scope in scopes():
        for group in config_groups(found, scope.name):
            cid = ",".join(group)
            values = f"({scope_values_sql(scope, group)})"
            for o in scope.outputs:
                if o.detail:
                    continue
                head = f"SELECT '{fam.name}' AS labeler"
                if o.kind == "categorical":
                    parts.append(f"({head}, {o.name} AS output, '{cid}' AS config_id, count(*) AS rows, "
                                 f"count(DISTINCT rollout_id) AS rollouts, "
                                 f"round(count(*) / sum(count(*)) OVER (), 4) AS mean, NULL::DOUBLE AS flagged "
                                 f"FROM {values} WHERE {o.name} IS NOT NULL GROUP BY {o.name})")
                else:
                    mean = "NULL::DOUBLE" if o.kind == "flag" else f"round(avg({o.name}), 4)"
                    flagged = f"round(avg({o.name}::INT), 3)" if o.kind == "flag" else "NULL::DOUBLE"
                    parts.append(f"({head}, '{o.name}' AS output, '{cid}' AS config_id, count({o.name}) AS rows, "
                                 f"count(DISTINCT rollout_id) FILTER (WHERE {o.name} IS NOT NULL) AS rollouts, "
                                 f"{mean} AS mean, {flagged} AS flagged FROM {values} HAVING count({o.name}) > 0)")
    return " UNION ALL ".join(parts) if parts else None


__all__ = ["LabelFamily", "LabelScope", "TokenOutput", "families", "family", "build_labeler", "scopes", "outputs",
           "configs_in", "pick_configs", "token_labels_sql", "summary_sql", "scope_values_sql", "AmbiguousConfig",
           "parse_picks"]
