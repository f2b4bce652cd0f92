"""Hallucination probes on real data: linear vs LoRA vs the uncertainty baselines, one run.

    python bench/eval_probe_countries.py [--model smollm2-135m] [--prompts 236] [--n 2] [--lake DIR]

Rolls out the model on the countries world (real facts: `countryinfo`), labels the claims
against the knowledge base (`label --labelers hallucination`), then trains, on the same
prompt splits, the linear probe (`probe train`) and upstream's LoRA probe (`probe train
--kind lora`, once with its config's λ_KL 0.5 and once with its released probes' 0.05).
Prints each method's test-split ROC AUC (span and token level) and each probe's threshold,
chosen on the validation split, with its validation and test span F1. Steps that already
ran in `--lake` are found, not redone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

RUN = "countries"


def tokenmill(*args: str) -> float:
    """Run one `tokenmill` command; its wall time."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "tokenmill.cli", *args]
    print("$ tokenmill " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=236, help="countries (236: every one, train and test splits)")
    ap.add_argument("--n", type=int, default=2, help="samples per prompt")
    ap.add_argument("--engine", default="vllm")
    ap.add_argument("--layer", type=int, default=-2)
    ap.add_argument("--lake", default=None, help="lake directory (default: a temporary one)")
    args = ap.parse_args()
    lake = args.lake or tempfile.mkdtemp(prefix="tokenmill-probes-")
    os.makedirs(lake, exist_ok=True)
    common = ["--lake", lake, "--run", RUN]
    wall = {
        "rollouts": tokenmill("run", "--lake", lake, "--run-id", RUN, "--world", "countries", "--split", "all",
                              "--prompts", str(args.prompts), "-n", str(args.n), "--temperature", "0.7",
                              "--max-tokens", "128", "--model", args.model, "--engine", args.engine),
        "label": tokenmill("label", *common, "--labelers", "hallucination"),
        "linear": tokenmill("probe", "train", *common, "--layer", str(args.layer)),
        "lora (λ_KL 0.5)": tokenmill("probe", "train", *common, "--layer", str(args.layer), "--kind", "lora"),
        "lora (λ_KL 0.05)": tokenmill("probe", "train", *common, "--layer", str(args.layer), "--kind", "lora",
                                      "--kl-weight", "0.05"),
    }

    import json

    import pyarrow as pa
    from rich.console import Console

    from tokenmill.report.summary import render_table
    from tokenmill.storage.catalog import query
    from tokenmill.storage.lake import Lake

    console = Console(width=160)
    lk = Lake(lake)
    arts = query(lk, "SELECT artifact_id, path, lineage, steps, final_loss FROM model_artifacts "
                     "WHERE run_id = $run AND role = 'probe' ORDER BY created_at", {"run": RUN}).to_pylist()
    names = {}
    for a in arts:
        lin = json.loads(a["lineage"])
        kind = lin.get("kind", "linear")
        names[a["artifact_id"]] = kind if kind == "linear" else f"lora λ_KL {lin['train']['kl_weight']:g}"
    ev = query(lk, "SELECT probe_id, level, method, auc, positives, negatives FROM probe_eval WHERE run_id = $run "
                   "ORDER BY level, method", {"run": RUN}).to_pylist()
    rows, seen = [], set()
    for r in ev:
        if r["method"] == "probe":
            method = f"probe: {names.get(r['probe_id'], r['probe_id'])}"
        elif (r["level"], r["method"]) in seen:
            continue  # a baseline is the same on every probe's test split
        else:
            seen.add((r["level"], r["method"]))
            method = r["method"]
        rows.append({"level": r["level"], "method": method, "auc": None if r["auc"] is None else round(r["auc"], 3),
                     "positives": r["positives"], "negatives": r["negatives"]})
    rows.sort(key=lambda r: (r["level"], not r["method"].startswith("probe"), -(r["auc"] or 0)))
    console.print(render_table(pa.Table.from_pylist(rows), title=f"test-split ROC AUC, not supported vs supported "
                                                                  f"({args.model}, {RUN}, layer {args.layer})"))
    from tokenmill.tasks.train.probe import load_probe_meta

    recs = []
    for a in arts:
        meta = load_probe_meta(lk, a["path"])
        recs.append({"probe": names[a["artifact_id"]], "layer": meta["layer"], "steps": a["steps"],
                     "final loss": round(a["final_loss"], 4), "threshold (val)": round(meta["threshold"], 3),
                     "val span F1": round(meta["val_span_f1"], 3), "test span F1": round(meta["test_span_f1"], 3),
                     "final KL": round(meta["final_kl"], 4) if "final_kl" in meta else None,
                     **{f"{k} spans": v["spans"] for k, v in meta["splits"].items()}})
    console.print(render_table(pa.Table.from_pylist(recs), title="probes: threshold on validation, F1 on test"))
    console.print(render_table(pa.Table.from_pylist([{"step": k, "seconds": round(v, 1)} for k, v in wall.items()]),
                               title="wall time"))


if __name__ == "__main__":
    main()
