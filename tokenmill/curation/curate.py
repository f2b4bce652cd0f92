"""Curation recipes: named, parameterised selections over the DuckDB catalog that emit
token-weighted datasets (format and loaders: `tokenmill/datasets.py`).

A recipe is a SQL query over the lake's views returning one row per example:

  sequences  prompt_token_ids, completion_token_ids, weights (list<float>, one per
             completion token), [targets (list<float>)], rollout_id, run_id, prompt, completion
  pairs      prompt_token_ids, prompt, chosen/rejected _token_ids, _weights, _rollout_id, _text,
             [_rewards], run_id

Built in:
  dpo-pairs      (prompt, chosen, rejected) from correct × incorrect rollouts of one prompt
                 and model (at most `max_pairs` per prompt and model), weights 1; with
                 `reward_config` = a rewards config id, both sides' `dpo` token rewards (TGDPO)
  cdpo-pairs     the same, only rejected rollouts with `critical` labels; rejected weights =
                 cDPO's 1 − p_CE (`critical.weight`), chosen weights = `chosen_weight` (1)
  weighted-sft   rollouts passing `where` (SQL over `rollouts`), each completion token
                 weighted by `weight`, a SQL expression over each token's columns: logprob,
                 entropy and every label family's token outputs (`tokenmill/labelers`:
                 critical_weight, p_ce, dpo, grpo, tempo, d3s, d3s_keep, entropy_flag,
                 rlpr, routing, halluc, …), e.g. `CASE WHEN halluc = 1 THEN 0 ELSE 1 END`;
                 where a label scope the expressions use has several configs, `configs`
                 (comma-separated config ids) names the one to read. Selection first
                 (`curation/selection.py`): `std_filter_beta` keeps prompts by RLPR's EMA
                 std filter of their `std_filter_kind` rewards (rlpr), `select_m` keeps each
                 prompt's m rollouts of largest `select_by` (grpo) variance (D³S sample level)
  router-set     R2R trajectories, targets = 1 at divergent tokens, else 0; undecidable tokens weight 0
  probe-set      bios rollouts, targets = the hallucination_tokens label (1 / 0 / −100)
  sql:<file>     a user's SQL file whose result has the sequence columns (`$run` is bound)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import labelers
from tokenmill.curation.curate_config import CurateConfig
from tokenmill.curation.selection import SELECTION_PARAMS, selected_rollouts
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import only_config, query
from tokenmill.storage.lake import Lake

SEQUENCE_COLUMNS = ("prompt_token_ids", "completion_token_ids", "weights")
PAIR_COLUMNS = ("prompt_token_ids", "chosen_token_ids", "rejected_token_ids", "chosen_weights", "rejected_weights")

def token_labels(lake: Lake, run: str, expressions: str, chosen: str | None) -> tuple[str, dict]:
    """The per-token label query weighted-sft reads (one row per generated token with the
    label columns the expressions use, every family's from its declaration in
    `tokenmill.labelers`) and its config binds. A scope with several configs that the
    expressions use needs one named in `chosen` (comma-separated config ids): averaging
    them would change a dataset whenever a config is added."""
    names = [o.name for _, _, o in labelers.outputs() if re.search(rf"\b{o.name}\b", expressions)]
    used = {labelers.scope_of_output(n)[1].name for n in names}
    found = labelers.configs_in(lambda sql, binds: query(lake, sql, binds).to_pylist(), run)
    picked, _ = labelers.pick_configs(found, chosen, "recipe weighted-sft", run, used=used)
    return labelers.token_labels_sql(picked, names)


# `dpo-pairs` and `cdpo-pairs` share this query; cDPO ($critical) keeps only rejected
# rollouts with critical labels and weights them 1 − p_CE, plain pairs weight every token 1.
# Token rewards of kind `dpo` of the labeller config `$reward_config` ride along for TGDPO
# (null without one: a run may hold several dpo reward configs, and a dataset must not
# change when another is added).
PAIRS = """
WITH crit AS (SELECT rollout_id, list(weight ORDER BY pos) AS w FROM critical
              WHERE run_id = $run AND ($config IS NULL OR config_id = $config) GROUP BY rollout_id),
rew AS (SELECT rollout_id, list(value::FLOAT ORDER BY pos) AS r FROM (
            SELECT rollout_id, pos, avg(value) AS value FROM token_rewards
            WHERE run_id = $run AND kind = 'dpo' AND config_id = $reward_config
            GROUP BY ALL) GROUP BY rollout_id),
pairs AS (
    SELECT g.prompt_id, g.model, g.prompt_token_ids, g.rollout_id AS chosen_rollout_id,
           g.completion_token_ids AS chosen_token_ids, g.completion AS chosen_text,
           b.rollout_id AS rejected_rollout_id, b.completion_token_ids AS rejected_token_ids,
           b.completion AS rejected_text,
           CASE WHEN $critical THEN c.w ELSE list_transform(b.completion_token_ids, lambda x: 1.0::FLOAT) END AS rejected_weights,
           rg.r AS chosen_rewards, rb.r AS rejected_rewards,
           row_number() OVER (PARTITION BY g.prompt_id, g.model ORDER BY hash(g.rollout_id || b.rollout_id)) AS k
    FROM rollouts g JOIN rollouts b ON b.run_id = g.run_id AND b.prompt_id = g.prompt_id AND b.model = g.model
    LEFT JOIN crit c ON c.rollout_id = b.rollout_id
    LEFT JOIN rew rg ON rg.rollout_id = g.rollout_id LEFT JOIN rew rb ON rb.rollout_id = b.rollout_id
    WHERE g.run_id = $run AND g.verdict = 'correct' AND b.verdict = 'incorrect'
      AND (NOT $critical OR c.w IS NOT NULL))
SELECT p.prompt, pairs.*, list_transform(chosen_token_ids, lambda x: $chosen_weight::FLOAT) AS chosen_weights, $run AS run_id
FROM pairs JOIN prompts p ON p.run_id = $run AND p.prompt_id = pairs.prompt_id
WHERE k <= $max_pairs ORDER BY chosen_rollout_id, rejected_rollout_id
"""

# a rollout with no completion tokens is kept with no weights; one whose token rows are
# missing gets null weights, which `datasets.build` refuses naming the rollout (never dropped)
WEIGHTED_SFT = """
WITH tl AS ({token_labels}),
w AS (SELECT rollout_id, list(({weight})::FLOAT ORDER BY pos) AS weights FROM tl GROUP BY rollout_id)
SELECT r.rollout_id, $run AS run_id, r.prompt_token_ids, r.completion_token_ids,
       CASE WHEN len(r.completion_token_ids) = 0 THEN []::FLOAT[] ELSE w.weights END AS weights, p.prompt, r.completion
FROM (SELECT * FROM rollouts WHERE run_id = $run AND ({where})) r
LEFT JOIN w USING (rollout_id) JOIN prompts p ON p.run_id = r.run_id AND p.prompt_id = r.prompt_id
ORDER BY r.rollout_id
"""

ROUTER_SET = """
WITH y AS (SELECT rollout_id, list((label = 2)::FLOAT ORDER BY pos) AS targets,
                  list((label <> 3)::FLOAT ORDER BY pos) AS weights FROM routing  -- undecidable (3): weight 0
           WHERE run_id = $run AND ($config IS NULL OR config_id = $config) GROUP BY rollout_id)
SELECT r.rollout_id, $run AS run_id, r.prompt_token_ids, r.completion_token_ids,
       y.weights, y.targets, p.prompt, r.completion
FROM rollouts r JOIN y USING (rollout_id) JOIN prompts p ON p.run_id = r.run_id AND p.prompt_id = r.prompt_id
WHERE r.run_id = $run ORDER BY r.rollout_id
"""

PROBE_SET = """
WITH y AS (SELECT rollout_id, list(label::FLOAT ORDER BY pos) AS targets FROM hallucination_tokens
           WHERE run_id = $run AND ($config IS NULL OR config_id = $config) GROUP BY rollout_id)
SELECT r.rollout_id, $run AS run_id, r.prompt_token_ids, r.completion_token_ids,
       list_transform(y.targets, lambda x: CASE WHEN x = -100 THEN 0.0 ELSE 1.0 END::FLOAT) AS weights, y.targets,
       p.prompt, r.completion
FROM rollouts r JOIN y USING (rollout_id) JOIN prompts p ON p.run_id = r.run_id AND p.prompt_id = r.prompt_id
WHERE r.run_id = $run ORDER BY r.rollout_id
"""


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str  # sequences | pairs
    sql: str
    defaults: dict
    fixed: dict = field(default_factory=dict)  # bound, not user-settable
    config_table: str | None = None  # the labels `$config` picks a labeller config of
    optional: tuple[str, ...] = ()  # settable, but absent from the parameters (and dataset ids) unless given

    def resolve_config(self, lake: Lake, run: str, params: dict) -> dict:
        """`params` with `config` set for `run`: the given one, the run's only config, or None
        (all) where its configs label disjoint rollouts (critical: one per policy); never a mix
        of two labellings of one rollout (a dataset must not change when a config is added)."""
        if self.config_table is None or params.get("config") is not None:
            return params
        return {**params, "config": only_config(lake, self.config_table, run, f"recipe {self.name}",
                                                fix="pick one with --param config=<config id>", disjoint=True)}

    def params(self, given: dict) -> dict:
        unknown = set(given) - set(self.defaults) - set(self.optional)
        if unknown:
            raise TokenmillError(f"recipe {self.name}: unknown parameter(s) {', '.join(sorted(unknown))}",
                                 fix=f"parameters: {', '.join([*self.defaults, *self.optional]) or 'none'}")
        return {**self.defaults, **given}

    def binds(self, params: dict) -> dict:
        return {k: v for k, v in {**params, **self.fixed}.items() if f"${k}" in self.sql}


RECIPES = {
    "cdpo-pairs": Recipe("cdpo-pairs", "pairs", PAIRS, {"config": None, "chosen_weight": 1.0, "max_pairs": 4,
                                                         "reward_config": None}, {"critical": True}, "critical"),
    "dpo-pairs": Recipe("dpo-pairs", "pairs", PAIRS, {"chosen_weight": 1.0, "max_pairs": 4, "reward_config": None},
                        {"critical": False, "config": None}),
    "weighted-sft": Recipe("weighted-sft", "sequences", WEIGHTED_SFT, {"weight": "1.0", "where": "verdict = 'correct'"},
                           optional=("configs", *SELECTION_PARAMS)),
    "router-set": Recipe("router-set", "sequences", ROUTER_SET, {"config": None}, config_table="routing"),
    "probe-set": Recipe("probe-set", "sequences", PROBE_SET, {"config": None}, config_table="hallucination_spans"),
}


def get_recipe(name: str) -> Recipe:
    if name.startswith("sql:"):
        path = Path(name[4:])
        if not path.exists():
            raise TokenmillError(f"recipe file {path} does not exist", fix="give sql:PATH to a SELECT over the lake's tables")
        return Recipe(name, "sequences", path.read_text(), {})
    if name not in RECIPES:
        raise TokenmillError(f"unknown recipe {name!r}", fix=f"choose from {', '.join(RECIPES)} or sql:PATH")
    return RECIPES[name]


def run_recipe(lake: Lake, name: str, run_ids: list[str], params: dict | None = None) -> tuple[Recipe, dict, pa.Table]:
    """(recipe, resolved parameters, its rows over all `run_ids`), columns checked."""
    recipe = get_recipe(name)
    p = recipe.params(params or {})
    parts = []
    for run in run_ids:
        sql = recipe.sql
        binds = recipe.binds(recipe.resolve_config(lake, run, p))
        if recipe.name == "weighted-sft":  # expressions are SQL by design: they are the recipe's language
            labels, cfgs = token_labels(lake, run, f"{p['weight']} {p['where']}", p.get("configs"))
            sql = sql.format(token_labels=labels, weight=p["weight"], where=p["where"])
            binds |= cfgs
        try:
            part = query(lake, sql, {**binds, "run": run} if "$run" in sql else binds)
        except TokenmillError:  # an unreadable lake file: its own message says which and what to do
            raise
        except Exception as e:  # a user's SQL or expression: say where it went wrong
            raise TokenmillError(f"recipe {recipe.name} on run {run!r}: {str(e).splitlines()[0]}",
                                 fix="check the recipe's SQL / --param expressions against `tokenmill sql 'SHOW TABLES'`") from None
        if (keep := selected_rollouts(lake, run, p)) is not None:
            part = part.filter(pc.is_in(part.column("rollout_id"), value_set=keep))
        parts.append(part)
    table = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
    required = PAIR_COLUMNS if recipe.kind == "pairs" else SEQUENCE_COLUMNS
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise TokenmillError(f"recipe {recipe.name}: the result lacks column(s) {', '.join(missing)}",
                             fix=f"a {recipe.kind} recipe returns {', '.join(required)}")
    return recipe, p, table


def curate(cfg: CurateConfig) -> dict:
    """Run a recipe and store its dataset; returns the manifest (plus `seconds`)."""
    from tokenmill import datasets as D

    t0 = time.time()
    lake = Lake(cfg.lake)
    recipe, params, rows = run_recipe(lake, cfg.recipe, cfg.runs, cfg.params)
    manifest = D.write(lake, D.build(recipe.kind, rows), recipe=recipe.name, kind=recipe.kind, params=params, runs=cfg.runs)
    return {**manifest, "seconds": round(time.time() - t0, 2)}
