"""Hallucination-span benchmark: spans/s and tokens/s of extraction + scoring on CPU.

    python bench/bench_hallucination.py [--prompts 256] [--n 4] [--repeat 3]

tiny-small samples `--n` biographies for each of `--prompts` bios prompts (known and
unknown people; generated first, not timed). Then, on the same rollouts and tokens:

* batched  `HallucinationLabeler.label`: regex extraction per text, span → token mapping
           by two `searchsorted` over all rollouts, segment reductions for min/mean prob
           and entropy, CCP as one [tokens, k] comparison over a per-vocabulary code
           table, consistency by Arrow group-bys;
* naive    the way a per-example script does it: per span, scan the rollout's tokens for
           overlaps, then per token decode its alternatives and compare strings, and per
           span scan the other samples for the same value.

Both give the same spans and scores (checked). Best of `--repeat`, alternating; the ratio
batched / naive of spans/s is printed.
"""

from __future__ import annotations

import argparse
import math
import os
import time


def naive_label(rollouts, tokens, prompts, tokenizer):
    """Per-span, per-token Python: the baseline."""
    from tokenmill.labelers.hallucination.annotators import KBAnnotator
    from tokenmill.labelers.hallucination.spans import get_extractor

    kb = get_extractor("kb")
    toks = {}
    for row in tokens.to_pylist():
        toks.setdefault(row["rollout_id"], []).append(row)
    rows = rollouts.to_pylist()
    found = []  # (rollout index, span)
    for i, r in enumerate(rows):
        for span in kb.find(r["completion"]):
            found.append((i, span))
    by_group = {}
    for i, (a, b, text, kind) in found:
        key = (rows[i]["prompt_id"], rows[i]["model"], kind, text.strip().casefold())
        by_group.setdefault(key, set()).add(rows[i]["rollout_id"])
    sizes = {}
    for r in rows:
        sizes[(r["prompt_id"], r["model"])] = sizes.get((r["prompt_id"], r["model"]), 0) + 1
    out = []
    for i, (a, b, text, kind) in found:
        r = rows[i]
        covered = [t for t in toks[r["rollout_id"]] if t["char_start"] < b and t["char_end"] > a]
        probs = [math.exp(t["logprob"]) for t in covered]
        ccp = 1.0
        for t in covered:
            mine = tokenizer.decode([t["token_id"]]).strip().casefold()
            num = den = 0.0
            ids = list(t["topk_ids"])
            for alt, lp in zip(ids, t["topk_logprobs"]):
                p = math.exp(lp)
                den += p
                num += p if tokenizer.decode([alt]).strip().casefold() == mine or alt == t["token_id"] else 0.0
            if t["token_id"] not in ids:
                num += math.exp(t["logprob"])
                den += math.exp(t["logprob"])
            ccp *= num / den if den else 1.0
        size = sizes[(r["prompt_id"], r["model"])]
        same = len(by_group[(r["prompt_id"], r["model"], kind, text.strip().casefold())])
        label = KBAnnotator().annotate({"row": [0], "text": [text], "entity_type": [kind]}, {"prompt": [prompts[r["prompt_id"]]]})[0]
        out.append((r["rollout_id"], covered[0]["pos"], covered[-1]["pos"], min(probs), sum(probs) / len(probs), ccp,
                    (same - 1) / (size - 1) if size > 1 else None, label))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from rich.console import Console
    from rollout_lake import rollout_lake  # bench/ is on sys.path when a bench runs as a script
    from rich.table import Table

    from tokenmill.engines import load_tokenizer
    from tokenmill.sources.base import prompts_from_table
    from tokenmill.storage.lake import Lake
    from tokenmill.labelers.hallucination.labeler import ROLLOUT_COLUMNS, TOKEN_COLUMNS, HallucinationLabeler

    console = Console(width=120)
    lake_dir = rollout_lake(console, "halluc", "tiny-small", "bios", args.prompts, args.n, 1.0, 64, split="all")
    lake = Lake(lake_dir)
    rollouts = lake.read("rollouts", "b", columns=ROLLOUT_COLUMNS).sort_by("rollout_id")
    tokens = lake.read("tokens", "b", columns=TOKEN_COLUMNS).sort_by([("rollout_id", "ascending"), ("pos", "ascending")])
    prompts = {p.prompt_id: p for p in prompts_from_table(lake.read("prompts", "b"))}
    tok = load_tokenizer("tiny-small")
    labeler = HallucinationLabeler()
    labeler.label(rollouts.slice(0, 8), tokens, prompts)  # warm-up: vocabulary tables built

    best = {"naive": float("inf"), "batched": float("inf")}
    out = {}
    for i in range(args.repeat):
        for side in (("naive", "batched") if i % 2 == 0 else ("batched", "naive")):
            t0 = time.perf_counter()
            out[side] = (naive_label(rollouts, tokens, prompts, tok) if side == "naive"
                         else labeler.label(rollouts, tokens, prompts))
            best[side] = min(best[side], time.perf_counter() - t0)
    spans = out["batched"].num_rows
    ref = sorted(out["naive"])
    got = sorted(zip(*(out["batched"].column(c).to_pylist() for c in
                       ("rollout_id", "start_pos", "end_pos", "min_prob", "mean_prob", "ccp", "consistency", "label"))),
                 key=lambda r: r[:3])
    assert len(ref) == len(got) and all(a[:3] == b[:3] and a[7] == b[7] for a, b in zip(ref, got))
    ccp_diff = max(abs(a[5] - b[5]) for a, b in zip(ref, got)) if ref else 0.0

    table = Table(title=f"hallucination spans: {rollouts.num_rows} bios rollouts, {tokens.num_rows:,} tokens, {spans:,} spans")
    for col in ("method", "seconds (best)", "spans/s", "tokens/s"):
        table.add_column(col, justify="right")
    for side in ("naive", "batched"):
        table.add_row(side, f"{best[side]:.3f}", f"{spans / best[side]:,.0f}", f"{tokens.num_rows / best[side]:,.0f}")
    console.print(table)
    console.print(f"ratio batched / naive: [bold]{best['naive'] / best['batched']:.1f}×[/]   max |Δ ccp| = {ccp_diff:.1e}")


if __name__ == "__main__":
    main()
