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

Where a labeler ran with several configs on one rollout, its values are averaged (numbers)
or the most severe category is kept, as the `token_labels` recipe query does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from tokenmill.code.universal_ast import CATEGORIES
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


# Category colours are fixed so a legend reads the same on every rollout.
# one fixed colour per MLCPD category (tokenmill/code/universal_ast.py CATEGORIES)
_PALETTE = ("#8dd3c7", "#fdb462", "#80b1d3", "#bebada", "#d9d9d9", "#ccebc5", "#ffffb3", "#9ecae1", "#c994c7",
            "#a1d99b", "#fdae6b", "#fb9a99", "#fb8072", "#ffed6f", "#b3de69", "#bc80bd", "#e5c494", "#fccde5", "#f0f0f0")
_AST_COLOURS = dict(zip(CATEGORIES, _PALETTE, strict=True))

LABELS: list[Label] = [
    Label("logprob", "log-probability", "uncertainty", "sequential",
          "log p of the sampled token under the generating model; darker = less likely", reverse=True),
    Label("entropy", "entropy", "uncertainty", "sequential", "entropy (nats) of the generating model's next-token distribution"),
    Label("critical_weight", "critical weight (cDPO)", "critical tokens", "sequential",
          "cDPO token weight 1 − p_CE: high where the model trained on wrong answers prefers the token", domain=(0.0, 1.0)),
    Label("routing", "routing class (R2R)", "routing", "categorical",
          "the small model's next token against the large model's: identical, neutral or divergent",
          categories={"identical": "#e8f1fb", "neutral": "#fdd49e", "divergent": "#e34a33"}),
    Label("reward:dpo", "DPO implicit reward", "token rewards", "diverging", "β·(log π − log π_ref) per token"),
    Label("reward:grpo", "GRPO advantage", "token rewards", "diverging", "group-normalised outcome advantage, on every token"),
    Label("reward:tempo", "TEMPO advantage", "token rewards", "diverging", "prefix-tree (branch) advantage per token"),
    Label("reward:d3s", "D³S score", "token rewards", "diverging", "|A|·H per token; kept tokens are flagged"),
    Label("reward:entropy", "entropy window", "token rewards", "sequential", "trailing-window mean entropy; high windows flagged"),
    Label("reward:rlpr", "RLPR reward", "token rewards", "diverging", "probability of the reference answer"),
    Label("halluc_label", "hallucination span label", "hallucination", "categorical",
          "verdict of the entity span the token is in (most severe when spans overlap)",
          categories={"supported": "#a1d99b", "unverifiable": "#fdd49e", "not_supported": "#e34a33", "unlabelled": "#d9d9d9"}),
    Label("halluc_risk", "hallucination span risk", "hallucination", "sequential",
          "1 − min token probability of the span the token is in", domain=(0.0, 1.0)),
    Label("ast_category", "AST category", "syntax", "categorical",
          "MLCPD universal category of the innermost syntax node the token starts in", categories=_AST_COLOURS),
]
LABEL_BY_NAME = {lb.name: lb for lb in LABELS}
_ROUTING = np.array(["identical", "neutral", "divergent"], dtype=object)
_SEVERITY = ("unlabelled", "supported", "unverifiable", "not_supported")  # on overlap the worst wins


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


_TOKENS_SQL = """
WITH t AS (SELECT pos, token_id, logprob, entropy, char_start, char_end FROM tokens
           WHERE run_id = $run AND rollout_id = $rid),
cr AS (SELECT pos, avg(weight) AS critical_weight, avg(p_ce) AS p_ce, bool_or(is_critical) AS is_critical
       FROM critical WHERE run_id = $run AND rollout_id = $rid GROUP BY pos),
ro AS (SELECT pos, max(label) AS routing, any_value(small_token_id) AS small_token_id
       FROM routing WHERE run_id = $run AND rollout_id = $rid GROUP BY pos),
sp AS (SELECT start_pos, end_pos, CASE label WHEN 'supported' THEN 1 WHEN 'unverifiable' THEN 2
                                             WHEN 'not_supported' THEN 3 ELSE 0 END AS severity, 1 - min_prob AS risk
       FROM hallucination_spans WHERE run_id = $run AND rollout_id = $rid),
ha AS (SELECT t.pos, max(sp.severity) AS halluc_severity, max(sp.risk) AS halluc_risk
       FROM t JOIN sp ON t.pos BETWEEN sp.start_pos AND sp.end_pos GROUP BY t.pos),
ast AS (SELECT pos, any_value(category) AS ast_category, any_value(type) AS ast_type
        FROM ast_tokens WHERE run_id = $run AND rollout_id = $rid AND node_id >= 0 GROUP BY pos)
SELECT t.*, cr.critical_weight, cr.p_ce, cr.is_critical, ro.routing, ro.small_token_id,
       ha.halluc_severity, ha.halluc_risk, ast.ast_category, ast.ast_type
FROM t LEFT JOIN cr USING (pos) LEFT JOIN ro USING (pos) LEFT JOIN ha USING (pos) LEFT JOIN ast USING (pos)
ORDER BY pos
"""

_REWARDS_SQL = """
SELECT kind, pos, avg(value) AS value, bool_or(flag) AS flag FROM token_rewards
WHERE run_id = $run AND rollout_id = $rid GROUP BY kind, pos
"""

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


def rollout_detail(con: duckdb.DuckDBPyConnection, run: str, rollout_id: str) -> dict:
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
    t = con.sql(_TOKENS_SQL, params=params).to_arrow_table()
    n = t.num_rows
    starts, ends = t.column("char_start").to_pylist(), t.column("char_end").to_pylist()
    text = [completion[a:b] for a, b in zip(starts, ends)]  # one rollout: a page, not a hot path
    labels: dict[str, list] = {
        "logprob": _column(t, "logprob", 6), "entropy": _column(t, "entropy"),
        "critical_weight": _column(t, "critical_weight"), "halluc_risk": _column(t, "halluc_risk"),
    }
    routing = t.column("routing").to_numpy(zero_copy_only=False)
    labels["routing"] = _categories(routing, _ROUTING)
    sev = t.column("halluc_severity").to_numpy(zero_copy_only=False)
    labels["halluc_label"] = _categories(sev, np.array(_SEVERITY, dtype=object))
    labels["ast_category"] = t.column("ast_category").to_pylist()
    extra = {"p_ce": _column(t, "p_ce"), "is_critical": t.column("is_critical").to_pylist(),
             "small_token_id": t.column("small_token_id").to_pylist(), "ast_type": t.column("ast_type").to_pylist()}
    rewards = con.sql(_REWARDS_SQL, params=params).to_arrow_table()
    pos = t.column("pos").to_numpy()
    for kind in sorted(set(rewards.column("kind").to_pylist())):
        rows = rewards.filter(pa.compute.equal(rewards.column("kind"), kind))
        at = np.searchsorted(pos, rows.column("pos").to_numpy())
        value = np.full(n, np.nan)
        value[at] = rows.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        labels[f"reward:{kind}"] = _json_numbers(value)
        flag = rows.column("flag")
        if flag.null_count < len(flag):
            flags = np.full(n, None, dtype=object)
            flags[at] = flag.to_pylist()
            extra[f"{kind}_flag"] = flags.tolist()
    spans = con.sql(_SPANS_SQL, params=params).to_arrow_table().to_pylist()
    return {
        "run": run, "rollout": meta, "completion": completion, "prompt": meta.pop("prompt"),
        "tokens": {"pos": t.column("pos").to_pylist(), "token_id": t.column("token_id").to_pylist(), "text": text},
        "completion_token_ids": ids,
        "labels": labels, "extra": extra, "spans": spans,
        "present": [name for name, values in labels.items() if any(v is not None for v in values)],
    }


def _categories(codes: np.ndarray, names: np.ndarray) -> list:
    """Integer codes (float with NaN for null) → category names, None where null."""
    codes = codes.astype(np.float64)
    out = np.full(len(codes), None, dtype=object)
    ok = np.isfinite(codes)
    out[ok] = names[codes[ok].astype(np.int64)]
    return out.tolist()
