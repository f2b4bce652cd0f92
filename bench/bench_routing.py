"""Routing-label benchmark: tokens/s of the routing labeler and where its time goes.

    python bench/bench_routing.py [--prompts 256] [--verifier outcome|judge] [--naive-prompts 64]

tiny-large's greedy trajectories on `--prompts` arithmetic training prompts (generated
first, not timed) are labelled against tiny-small:

* batched  `RoutingLabeler.label` over all trajectories: one teacher-forced pass of the
           small model for the router features (length buckets, shared prompt KV), one
           batched greedy continuation of the large model per mismatch, then verification
           (the world's exact verifier, or the judge model in batches);
* naive    the same labeller called one trajectory at a time, the way per-example labelling
           scripts run (on the first `--naive-prompts`; its rate is per token, so the sizes
           may differ).

Printed: trajectory tokens / s of each, the split between features (scoring), continuation
and verification, and the ratio batched / naive. `--verifier judge` uses a short judge
template (the tiny models have a 256-token context); the labels differ, the work is real.
"""

from __future__ import annotations

import argparse
import os
import time

JUDGE_TEMPLATE = "Context: {context}\nA: {reference}\nB: {candidate}\nSame? Output:"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--naive-prompts", type=int, default=64)
    ap.add_argument("--verifier", choices=["outcome", "judge"], default="outcome")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here

    from rich.console import Console
    from rollout_lake import rollout_lake  # bench/ is on sys.path when a bench runs as a script
    from rich.table import Table

    from tokenmill.config import RoutingConfig
    from tokenmill.storage.lake import Lake
    from tokenmill.labelers.routing.labeler import ROLLOUT_COLUMNS, RoutingLabeler

    console = Console(width=140)
    lake_dir = rollout_lake(console, "routing", "tiny-large", "arithmetic", args.prompts, 1, 0.0, 96)
    lake = Lake(lake_dir)
    rollouts = lake.read("rollouts", "b", columns=ROLLOUT_COLUMNS).sort_by("rollout_id")
    cfg = RoutingConfig(verifier=args.verifier, judge_template=JUDGE_TEMPLATE if args.verifier == "judge" else None)
    prompts = RoutingLabeler(cfg)._prompts(lake, "b")
    RoutingLabeler(cfg).label(rollouts.slice(0, 4), "tiny-large", prompts)  # warm-up: models loaded, caches built

    results = {}
    for side, table in (("batched", rollouts), ("naive", rollouts.slice(0, args.naive_prompts))):
        lab = RoutingLabeler(cfg)
        t0 = time.perf_counter()
        if side == "batched":
            lab.label(table, "tiny-large", prompts)
        else:
            for i in range(table.num_rows):  # the baseline: one trajectory at a time
                lab.label(table.slice(i, 1), "tiny-large", prompts)
        results[side] = (time.perf_counter() - t0, lab.timings)

    out = Table(title=f"routing labels ({args.verifier} verifier): tiny-large trajectories vs tiny-small")
    for col in ("method", "trajectories", "tokens", "mismatches", "seconds", "tokens/s", "features", "continuation",
                "verification", "other"):
        out.add_column(col, justify="right")
    for side in ("naive", "batched"):
        wall, t = results[side]
        other = wall - t["features"] - t["continuation"] - t["verification"]
        n = rollouts.num_rows if side == "batched" else min(args.naive_prompts, rollouts.num_rows)
        out.add_row(side, str(n), f"{t['tokens']:,}", str(t["mismatches"]), f"{wall:.2f}", f"{t['tokens'] / wall:,.0f}",
                    *(f"{t[k] / wall:.0%}" for k in ("features", "continuation", "verification")), f"{other / wall:.0%}")
    console.print(out)
    rate = {s: results[s][1]["tokens"] / results[s][0] for s in results}
    console.print(f"ratio batched / naive (tokens/s): [bold]{rate['batched'] / rate['naive']:.1f}×[/]   "
                  f"mismatch rate {results['batched'][1]['mismatches'] / results['batched'][1]['tokens']:.1%}")


if __name__ == "__main__":
    main()
