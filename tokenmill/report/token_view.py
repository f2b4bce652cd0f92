"""What the token viewer shows, as plain queries over the lake: runs, a page of rollouts,
and one rollout's tokens with every label tokenmill has for them.

The viewer (`report/viewer.py`) serves these as JSON; `--out` embeds them in one HTML
file. Each query touches one page of rollouts or one rollout, so a large lake stays
responsive: nothing loads a whole table.

A label is one value per token, drawn by the page with one colour rule (`LABELS`):

  sequential   0 → colour (or colour → 0 with `reverse`), over the rollout's range or a
               fixed `domain`
  diverging    blue < 0 < red, symmetric around 0
  categorical  one colour per category

The labels are the token outputs every label family declares (`tokenmill.labelers`), read
by the same per-token SQL curation uses. Where a label scope has several configs in a run,
the page asks which one to show (`configs`); it never averages two labellings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from tokenmill import labelers
from tokenmill.errors import LakeError, TokenmillError
from tokenmill.storage.catalog import check_read_only

PAGE_MAX = 500
ROLLOUT_COLUMNS = ("rollout_id", "prompt_id", "sample_index", "world", "model", "reward", "verdict", "num_tokens",
                   "finish_reason")


@dataclass(frozen=True)
class Label:
    name: str
    title: str
    family: str
    kind: str  # sequential | diverging | categorical
    help: str
    domain: tuple[float, float] | None = None  # fixed range; None: the rollout's own
    reverse: bool = False  # sequential: strongest colour at the low end
    categories: dict[str, str] = field(default_factory=dict)  # value → colour (categorical)
    scope: str | None = None  # the label scope whose config is picked (None: the tokens' own)


# the generating model's own statistics, from `tokens`; then every family's token outputs
# (flags are drawn as 0/1)
LABELS: list[Label] = [
    Label("logprob", "log-probability", "uncertainty", "sequential",
          "log p of the sampled token under the generating model; darker = less likely", reverse=True),
    Label("entropy", "entropy", "uncertainty", "sequential", "entropy (nats) of the generating model's next-token distribution"),
] + [Label(o.name, o.title, fam.title, o.scale, o.help, o.domain, o.reverse, dict(o.categories), scope.name)
     for fam, scope, o in labelers.outputs() if not o.detail]
LABEL_BY_NAME = {lb.name: lb for lb in LABELS}


def labels_json() -> list[dict]:
    return [asdict(lb) for lb in LABELS]


def list_runs(con: duckdb.DuckDBPyConnection) -> list[dict]:
    sql = """SELECT run_id AS run, count(*) AS rollouts, count(DISTINCT prompt_id) AS prompts,
                    string_agg(DISTINCT model, ', ' ORDER BY model) AS models,
                    string_agg(DISTINCT world, ', ' ORDER BY world) AS worlds
             FROM rollouts GROUP BY run_id ORDER BY run_id"""
    return con.sql(sql).to_arrow_table().to_pylist()


_PROBE = "SELECT * FROM rollouts WHERE "


def _where_sql(con: duckdb.DuckDBPyConnection, where: str | None) -> str:
    """The user's `WHERE` over rollouts, checked to be one boolean expression and nothing
    else, in DuckDB's own rendering of it.

    The text is parsed as `SELECT * FROM rollouts WHERE (<where>)`; the parse must be one
    plain SELECT of `rollouts` with no other clause (so `1=1) UNION ALL BY NAME SELECT …
    WHERE (1=1`, a set operation, is refused), and what runs is DuckDB's rendering of that
    parse tree (`json_deserialize_sql`), not the text: parentheses balanced, comments gone,
    so nothing after the expression can reach the query around it. Subqueries may filter
    (`rollout_id IN (SELECT rollout_id FROM critical)`): the page still holds only the
    run's rows, fixed outside the filter."""
    where = (where or "").strip()
    if not where:
        return "TRUE"
    probe = f"{_PROBE}({where})"
    try:
        check_read_only(con, probe)
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [probe]).fetchall()[0][0])
        if tree.get("error"):
            raise TokenmillError(tree.get("error_message", "does not parse"))
        stmts = tree["statements"]
        node = stmts[0]["node"] if len(stmts) == 1 else {}
        if node.get("type") != "SELECT_NODE":
            raise TokenmillError("it is not one expression (a set operation or another statement)")
        table = node.get("from_table") or {}
        extra = [k for k in ("group_expressions", "group_sets", "having", "qualify", "sample", "modifiers")
                 if node.get(k) not in (None, [], {})]
        if (table.get("type") != "BASE_TABLE" or table.get("table_name") != "rollouts" or table.get("schema_name")
                or node.get("cte_map", {}).get("map") or extra or len(node.get("select_list", [])) != 1):
            raise TokenmillError("it changes the query around it")
        canonical = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchall()[0][0]
        if not canonical.startswith(_PROBE):
            raise TokenmillError("it changes the query around it")
        cond = canonical[len(_PROBE):]
        con.sql(f"SELECT 1 FROM rollouts WHERE {cond} LIMIT 0")
    except (LakeError, TokenmillError, duckdb.Error) as e:
        detail = str(e).strip().splitlines()[0]
        raise TokenmillError(f"filter `{where}` is not a WHERE expression over rollouts: {detail}",
                             fix="write an SQL condition over rollouts' columns, e.g. world = 'bios' AND reward < 1") from None
    return f"({cond})"


def list_rollouts(con: duckdb.DuckDBPyConnection, run: str, where: str | None = None, search: str | None = None,
                  offset: int = 0, limit: int = 50) -> dict:
    """One page of a run's rollouts, filtered by an SQL `where` and a text `search` (rollout
    id or prompt id prefix, or a substring of the completion). Returns total and rows."""
    cond = _where_sql(con, where)
    limit = max(1, min(int(limit), PAGE_MAX))
    params = {"run": run, "q": (search or "").strip(), "offset": max(0, int(offset)), "limit": limit}
    # the run is fixed in a subquery, so a filter cannot widen the page to other runs
    base = f"""FROM (SELECT * FROM (SELECT * FROM rollouts WHERE run_id = $run) WHERE {cond})
               WHERE ($q = '' OR starts_with(rollout_id, $q) OR starts_with(prompt_id, $q)
                      OR contains(lower(completion), lower($q)))"""
    total = con.sql(f"SELECT count(*) {base}", params={k: params[k] for k in ("run", "q")}).fetchall()[0][0]
    rows = con.sql(
        f"""SELECT {', '.join(ROLLOUT_COLUMNS)}, left(completion, 90) AS excerpt {base}
            ORDER BY world, prompt_id, model, sample_index, rollout_id LIMIT $limit OFFSET $offset""",
        params=params).to_arrow_table().to_pylist()
    return {"total": int(total), "offset": params["offset"], "limit": limit, "rows": rows}


def siblings(con: duckdb.DuckDBPyConnection, run: str, rollout_id: str, limit: int = 200) -> list[dict]:
    """The other rollouts of the same prompt, of any model and any run (prompt ids hash the
    prompt, so last night's run and tonight's pair up): the candidates to compare with. This
    run's come first."""
    sql = f"""SELECT s.run_id, {', '.join('s.' + c for c in ROLLOUT_COLUMNS)}, left(s.completion, 90) AS excerpt
              FROM rollouts r JOIN rollouts s ON s.prompt_id = r.prompt_id
              WHERE r.run_id = $run AND r.rollout_id = $rid AND NOT (s.run_id = $run AND s.rollout_id = $rid)
              ORDER BY s.run_id <> $run, s.run_id, s.model, s.sample_index, s.rollout_id LIMIT {int(limit)}"""
    return con.sql(sql, params={"run": run, "rid": rollout_id}).to_arrow_table().to_pylist()


_SPANS_SQL = """
SELECT span_id, start_pos, end_pos, char_start, char_end, text, entity_type, coalesce(label, 'unlabelled') AS label,
       min_prob, mean_prob, mean_entropy, ccp, consistency, extractor, annotator
FROM hallucination_spans WHERE run_id = $run AND rollout_id = $rid
QUALIFY row_number() OVER (PARTITION BY span_id ORDER BY config_id) = 1
ORDER BY start_pos, end_pos
"""


def _column(table: pa.Table, name: str, digits: int = 4) -> list:
    """A numeric column as a JSON-ready list: rounded, nulls (and NaN) as None."""
    return _json_numbers(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64), digits)


def _json_numbers(arr: np.ndarray, digits: int = 4) -> list:
    out = np.round(arr, digits).astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


def rollout_detail(con: duckdb.DuckDBPyConnection, run: str, rollout_id: str, configs: str | None = None) -> dict:
    """One rollout, its prompt, its tokens (text cut from the completion by the tokens'
    character offsets) and, per label name, one value per token (None = no label there)."""
    params = {"run": run, "rid": rollout_id}
    meta = con.sql(f"""SELECT {', '.join('r.' + c for c in ROLLOUT_COLUMNS)}, r.completion, r.completion_token_ids,
                              p.prompt, r.verify_detail
                       FROM rollouts r LEFT JOIN prompts p ON p.run_id = r.run_id AND p.prompt_id = r.prompt_id
                       WHERE r.run_id = $run AND r.rollout_id = $rid LIMIT 1""", params=params).to_arrow_table().to_pylist()
    if not meta:
        raise TokenmillError(f"rollout {rollout_id} is not in run {run}", fix="pick one from the list (GET /api/rollouts)")
    meta = meta[0]
    completion = meta.pop("completion")
    ids = meta.pop("completion_token_ids")
    fetch = lambda sql, binds: con.sql(sql, params=binds).to_arrow_table().to_pylist()  # noqa: E731
    found = labelers.configs_in(fetch, run)
    picked, ask = labelers.pick_configs(found, configs, "viewer", run, strict=False, how="configs")
    sql, cfgs = labelers.token_labels_sql(picked, one_rollout=True)
    t = con.sql(sql + " ORDER BY t.pos", params={**params, **cfgs}).to_arrow_table()
    starts, ends = t.column("char_start").to_pylist(), t.column("char_end").to_pylist()
    text = [completion[a:b] for a, b in zip(starts, ends)]  # one rollout: a page, not a hot path
    labels: dict[str, list] = {"logprob": _column(t, "logprob", 6), "entropy": _column(t, "entropy")}
    extra: dict[str, list] = {}
    for _, _, o in labelers.outputs():
        col = t.column(o.name)
        if o.kind == "continuous":
            values = _column(t, o.name, 6 if o.name == "logprob" else 4)
        elif o.kind == "flag":
            values = [None if v is None else float(v) for v in col.to_pylist()] if not o.detail else col.to_pylist()
        else:
            values = col.to_pylist()
        (extra if o.detail else labels)[o.name] = values
    spans = con.sql(_SPANS_SQL, params=params).to_arrow_table().to_pylist()
    return {
        "run": run, "rollout": meta, "completion": completion, "prompt": meta.pop("prompt"),
        "tokens": {"pos": t.column("pos").to_pylist(), "token_id": t.column("token_id").to_pylist(), "text": text},
        "completion_token_ids": ids,
        "labels": labels, "extra": {k: v for k, v in extra.items() if any(x is not None for x in v)}, "spans": spans,
        "present": [name for name, values in labels.items() if any(v is not None for v in values)],
        # label scopes with several configs in the run: the page offers the choice, and shows
        # a scope's labels only once one is picked (`ask`: none is yet)
        "configs": {"picked": picked, "ask": ask, "several": {k: v for k, v in found.items() if k in found.overlapping}},
    }
