"""Curation throughput: recipes (DuckDB over the lake) against a pandas script doing the same.

    python bench/bench_curate.py [--prompts 512] [--samples 16]

tiny-small rolls out on `--prompts` arithmetic prompts × `--samples` samples (not timed);
every token then gets a `critical` row (incorrect rollouts) and a `grpo` token reward
(random values, written through `Lake.commit` like any labeler's). Timed, end to end
from the lake's Parquet files to the dataset table:

* weighted-sft   `run_recipe` + `datasets.build`, weight = coalesce(critical_weight, 1) + grpo
* cdpo-pairs     `run_recipe` + `datasets.build`, at most 4 pairs per prompt
* pandas         the same weighted-sft dataset the way a one-off script builds it: read
                 the tables, merge, compute the weight, group the tokens back into lists

Printed: rollouts (rows) / s and token labels / s of each, and recipe / pandas.
"""

from __future__ import annotations

import argparse
import os
import time


def label(lake, run: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from tokenmill.schema import CRITICAL, TOKEN_REWARDS
    from tokenmill.labelers.base import provenance

    rng = np.random.default_rng(0)
    tokens = lake.read("tokens", run, columns=["rollout_id", "pos", "token_id"])
    bad = lake.read("rollouts", run, columns=["rollout_id"], filter=pc.field("verdict") == "incorrect").column("rollout_id")
    t = tokens.filter(pc.is_in(tokens.column("rollout_id"), value_set=bad))
    n, m = t.num_rows, tokens.num_rows
    p = rng.uniform(0, 1, n).astype(np.float32)
    lake.commit("critical", run, pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "token_id": t.column("token_id"),
        "p_ce": p, "weight": 1 - p, "rank": pa.array(np.ones(n), pa.int32()), "is_critical": pa.array(p < 0.1),
        "pos_model": ["p"] * n, "neg_model": ["n"] * n, "beta": pa.array(np.ones(n), pa.float32()),
        **provenance(n, "critical", "1", {}, {})}, schema=CRITICAL.schema))
    lake.commit("token_rewards", run, pa.table({
        "rollout_id": tokens.column("rollout_id"), "pos": tokens.column("pos"), "kind": ["grpo"] * m,
        "value": rng.normal(0, 1, m).astype(np.float32), "flag": pa.nulls(m, pa.bool_()),
        **provenance(m, "rewards", "1", {}, {}, "grpo")}, schema=TOKEN_REWARDS.schema))


def pandas_weighted_sft(root: str, run: str):
    import glob

    import pandas as pd

    def read(table):
        return pd.concat([pd.read_parquet(f) for f in glob.glob(f"{root}/{table}/run_id={run}/*.parquet")])

    rollouts, prompts, tokens = read("rollouts"), read("prompts"), read("tokens")[["rollout_id", "pos"]]
    crit = read("critical")[["rollout_id", "pos", "weight"]].groupby(["rollout_id", "pos"], as_index=False).mean()
    rew = read("token_rewards")
    grpo = rew[rew.kind == "grpo"].groupby(["rollout_id", "pos"], as_index=False)["value"].mean()
    t = tokens.merge(crit, on=["rollout_id", "pos"], how="left").merge(grpo, on=["rollout_id", "pos"], how="left")
    t["w"] = t["weight"].fillna(1.0) + t["value"]
    t = t.sort_values(["rollout_id", "pos"])
    w = t.groupby("rollout_id")["w"].apply(list).rename("weights").reset_index()
    out = rollouts.merge(w, on="rollout_id").merge(prompts[["prompt_id", "prompt"]], on="prompt_id")
    out["input_ids"] = [list(p) + list(c) for p, c in zip(out.prompt_token_ids, out.completion_token_ids)]
    out["weights"] = [[0.0] * len(p) + w for p, w in zip(out.prompt_token_ids, out.weights)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from rich.console import Console
    from rollout_lake import rollout_lake  # bench/ is on sys.path when a bench runs as a script
    from rich.table import Table

    from tokenmill import datasets as D
    from tokenmill.storage.lake import Lake
    from tokenmill.curation.curate import run_recipe

    console = Console(width=140)
    root = rollout_lake(console, "curate", "tiny-small", "arithmetic", args.prompts, args.samples, 1.0, 64)
    lake = Lake(root)
    label(lake, "b")
    tokens = lake.read("tokens", "b", columns=["pos"]).num_rows
    results = {}
    for name, recipe, params in (("weighted-sft", "weighted-sft",
                                  {"where": "true", "weight": "coalesce(critical_weight, 1) + grpo"}),
                                 ("cdpo-pairs", "cdpo-pairs", {"max_pairs": 4})):
        run_recipe(lake, recipe, ["b"], params)  # warm-up: DuckDB views, file metadata cache
        t0 = time.perf_counter()
        r, _, rows = run_recipe(lake, recipe, ["b"], params)
        out = D.build(r.kind, rows)
        results[name] = (time.perf_counter() - t0, out.num_rows)
    t0 = time.perf_counter()
    df = pandas_weighted_sft(root, "b")
    results["pandas weighted-sft"] = (time.perf_counter() - t0, len(df))
    assert len(df) == results["weighted-sft"][1], "the baseline must build the same rows"

    table = Table(title=f"curation: {results['weighted-sft'][1]:,} rollouts, {tokens:,} generated tokens "
                        "(each with critical / grpo labels)")
    for col in ("method", "seconds", "rows out", "rollouts/s", "token labels/s", "vs pandas"):
        table.add_column(col, justify="left" if col == "method" else "right")
    base = results["pandas weighted-sft"][0]
    for name, (sec, n) in results.items():
        table.add_row(name, f"{sec:.3f}", f"{n:,}", f"{results['weighted-sft'][1] / sec:,.0f}", f"{tokens / sec:,.0f}",
                      f"{base / sec:.1f}×" if name == "weighted-sft" else "")
    console.print(table)


if __name__ == "__main__":
    main()
