"""GPU scoring benchmark: teacher-forced scoring throughput and MFU of the HF engine.

    python bench/bench_score_gpu.py [--sequences 512] [--repeats 3] [--token-budget 32768]
                                    [--peak-tflops 989] [--naive-sequences 64] [--json PATH]
    python bench/bench_score_gpu.py --tiny          # seconds on CPU (the smoke test)

Meant for a GPU machine (H100/H200) with no internet and no model hub: the model is a
Qwen2.5-0.5B-shaped `Qwen2ForCausalLM` built from its config with random weights
(24 layers, d_model 896, FFN 4864, 14 query / 2 KV heads, vocab 151936, tied embeddings),
in bfloat16 on cuda. Without a GPU it falls back to cpu / float32 and says so (the full
size model then takes minutes per repeat; use --tiny). Random weights do not change the
cost of a forward pass, so the throughput is the one of the real checkpoint.

What is timed is exactly `tokenmill.engines.hf.HFEngine.score` — the engine object is made
with `HFEngine.__new__` and its attributes (`model`, `tokenizer`, `model_id`, `device`,
`batch_size`, `token_budget`) set by hand, so nothing is loaded from disk. `score` sorts
the sequences by length, packs them into right-padded batches of at most `--token-budget`
padded tokens, runs the decoder once per batch and applies the LM head (in chunks) only at
completion positions, with exact full-vocabulary entropy and top-5 logprobs.
The workload: `--sequences` seeded random (prompt, completion) token-id pairs, prompt
length uniform in [64, 256], completion length uniform in [128, 512]. One call is a
warm-up (allocator, kernel selection), then `--repeats` calls are timed, each between
`torch.cuda.synchronize()` calls; the mean is reported.

Rates:

* tokens/s            all tokens forwarded (prompt + completion) / s, padding not counted;
* completion tok/s    scored (completion) tokens / s;
* TFLOP/s and MFU     model FLOP utilisation = achieved FLOP/s / peak FLOP/s, where the
                      achieved FLOPs count the useful work of the forward pass only (PaLM,
                      Chowdhery et al. 2022, appendix B: 6N per token for training, i.e.
                      2N forward + 4N backward; inference is the forward alone, 2N):

      FLOPs = Σ_seqs [ 2·N·T  +  2·L·T·d·T  +  2·d·V·C ]

      N  non-embedding parameters (every weight but the token embedding, which is a
         look-up; with tied embeddings the LM head is that same matrix, counted apart)
      T  tokens of the sequence (prompt + completion), C its completion tokens
      L  layers, d  d_model (= query heads × head dim), V  vocabulary size
      2·L·T·d per token: causal self-attention, QKᵀ and AV each 2·d FLOPs per attended
         position, averaged over the ~T/2 positions a causal token attends to
         (PaLM's 12·L·H·Q·T is the training, non-causal count: ÷3 forward, ÷2 causal)
      2·d·V per *completion* token: the LM head, which the engine applies only there

  Padding, the softmax/entropy/top-k over the vocabulary and the elementwise ops are not
  counted, so the MFU is a lower bound on hardware use. The peak is `--peak-tflops`:
  989 TFLOP/s = H100 SXM dense bf16 (no sparsity); the H200 has the same compute peak
  (H100 PCIe: 756). On CPU the MFU against that peak is meaningless but still printed.

Baseline, in the same run on the first `--naive-sequences` sequences: the plain way, one
HF forward per rollout, `model(input_ids=...)` with full logits at every position,
`log_softmax`, `gather` of the completion tokens' logprobs (it computes no entropy and no
top-k, so it does less work per token than the engine). Its tokens/s (prompt + completion)
and the ratio batched / naive are printed, along with the largest absolute difference
between the two logprobs of the same tokens (a check that both score the same thing; in
bf16 padding and batching change the rounding, so expect a small nonzero value; in float32
on CPU it is ~1e-6).

The fused head (`--head both`, the default): the same calls again with the engine's
`head="fused"` (`tokenmill/engines/fused_head.py`: the LM head chunked over the vocabulary
with running log-sum-exp, entropy and top-k, never [tokens, V] in float32), timed in the
same run; printed are its tokens/s, the ratio fused / rows, the largest |Δ logprob| and
|Δ entropy| between the two heads, and on cuda each head's peak memory. `--head rows` or
`--head fused` times one of them only.

`--json PATH` also writes the results as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(QWEN25_05B, vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Teacher-forced scoring throughput and MFU of tokenmill's HF engine "
                                             "on a random-weight Qwen2.5-0.5B-shaped model (no hub needed).")
    ap.add_argument("--sequences", type=int, default=None, help="rollouts scored per call (default 512; 16 with --tiny)")
    ap.add_argument("--repeats", type=int, default=3, help="timed score() calls after one warm-up (default 3)")
    ap.add_argument("--token-budget", type=int, default=32768, help="padded tokens per scoring batch (default 32768)")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="peak dense TFLOP/s for the MFU (default 989: H100 SXM bf16; H200 the same)")
    ap.add_argument("--naive-sequences", type=int, default=64,
                    help="sequences for the one-forward-per-rollout baseline (default 64; 0 skips it)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights and the token ids")
    ap.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    ap.add_argument("--tiny", action="store_true",
                    help="a 2-layer, d=64, vocab-1024 model and 16 short sequences: runs in seconds on CPU")
    ap.add_argument("--head", choices=("both", "rows", "fused"), default="both",
                    help="LM head(s) timed: rows (the engine's default), fused (vocabulary-chunked), both (default)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.sequences is None:
        args.sequences = 16 if args.tiny else 512
    args.naive_sequences = min(args.naive_sequences, args.sequences)
    return args


def build_model(cfg: dict, device, dtype, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**cfg)
    with torch.device(device):  # initialise in place: no 0.5B-parameter copy from the host
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def make_engine(model, device, token_budget: int, head: str = "rows"):
    from tokenmill.engines.hf import HFEngine

    engine = HFEngine.__new__(HFEngine)  # HFEngine.__init__ loads from disk; score() needs only these
    engine.model = model
    engine.tokenizer = SimpleNamespace(pad_token_id=0)  # score() reads only pad_token_id
    engine.model_id = "random-qwen2.5-0.5b-shape"
    engine.device = model.device
    engine.batch_size = 64
    engine.token_budget = token_budget
    engine.head = head
    engine.pack = False
    return engine


def make_workload(n: int, vocab: int, prompt_range, completion_range, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    p_len = rng.integers(prompt_range[0], prompt_range[1] + 1, n)
    c_len = rng.integers(completion_range[0], completion_range[1] + 1, n)
    prompts = [rng.integers(1, vocab, int(k)).tolist() for k in p_len]
    completions = [rng.integers(1, vocab, int(k)).tolist() for k in c_len]
    return prompts, completions


def count_params(model) -> tuple[int, int]:
    """(all distinct parameters, non-embedding parameters: all but the token embedding and LM head)."""
    seen, total = set(), 0
    for p in model.parameters():  # parameters() already yields a tied matrix once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    non_emb = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    return total, non_emb


def forward_flops(non_emb: int, n_layers: int, d_model: int, vocab: int, prompts, completions) -> float:
    """Useful forward FLOPs of scoring: Σ 2·N·T + 2·L·d·T² + 2·d·V·C (see the module docstring)."""
    flops = 0.0
    for p, c in zip(prompts, completions):
        t, k = len(p) + len(c), len(c)
        flops += 2.0 * non_emb * t + 2.0 * n_layers * d_model * t * t + 2.0 * d_model * vocab * k
    return flops


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, repeats: int, device) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def naive_score(model, prompts, completions, device) -> list:
    """One forward per rollout: full logits, log_softmax, gather of the completion tokens."""
    import torch

    out = []
    with torch.inference_mode():
        for p, c in zip(prompts, completions):
            ids = torch.tensor([list(p) + list(c)], device=device)
            logits = model(input_ids=ids).logits[0]  # [T, V], every position
            logp = torch.log_softmax(logits.float(), dim=-1)
            targets = ids[0, len(p):]
            out.append(logp[len(p) - 1 : -1].gather(-1, targets[:, None]).squeeze(-1))
    return out


def print_table(res: dict) -> None:
    rows = [
        ("device", res["device"]), ("dtype", res["dtype"]), ("attention", res["attn_implementation"]),
        ("params (all / non-emb)", f"{res['params'] / 1e6:,.1f} M / {res['params_non_embedding'] / 1e6:,.1f} M"),
        ("sequences × repeats", f"{res['sequences']} × {res['repeats']}"),
        ("tokens / call (compl.)", f"{res['tokens']:,} ({res['completion_tokens']:,})"),
        ("seconds / call", f"{res['seconds']:.4f}"),
        ("tokens/s", f"{res['tokens_per_s']:,.0f}"),
        ("completion tok/s", f"{res['completion_tokens_per_s']:,.0f}"),
        ("TFLOP/s", f"{res['tflops']:.3f}"),
        (f"MFU (peak {res['peak_tflops']:g})", f"{res['mfu'] * 100:.3g} %"),
    ]
    if res.get("fused_tokens_per_s"):
        rows += [
            ("fused head tok/s", f"{res['fused_tokens_per_s']:,.0f}"),
            ("ratio fused / rows", f"{res['fused_ratio']:.2f}×"),
            ("fused max |Δ logprob|, |Δ entropy|", f"{res['fused_max_abs_diff']:.3g}, {res['fused_entropy_max_abs_diff']:.3g}"),
        ]
        if res.get("fused_max_memory_allocated_gb") is not None:
            rows.append(("peak GiB rows / fused", f"{res['max_memory_allocated_gb']:.2f} / "
                                                   f"{res['fused_max_memory_allocated_gb']:.2f}"))
    if res.get("naive_tokens_per_s"):
        rows += [
            (f"naive tok/s ({res['naive_sequences']} seqs)", f"{res['naive_tokens_per_s']:,.0f}"),
            ("ratio batched / naive", f"{res['ratio']:.2f}×"),
            ("max |Δ logprob|", f"{res['naive_max_abs_diff']:.3g}"),
        ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="HFEngine.score — teacher-forced scoring")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in rows:
            table.add_row(k, str(v))
        Console().print(table)
    except ImportError:
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
        print("notice: no CUDA GPU; running on cpu in float32 (the numbers are not GPU numbers)", file=sys.stderr)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = TINY if args.tiny else QWEN25_05B
    p_range, c_range = ((4, 16), (8, 32)) if args.tiny else ((64, 256), (128, 512))

    model = build_model(cfg, device, dtype, args.seed)
    engine = make_engine(model, device, args.token_budget)
    prompts, completions = make_workload(args.sequences, cfg["vocab_size"], p_range, c_range, args.seed)
    total_params, non_emb = count_params(model)
    tokens = sum(len(p) + len(c) for p, c in zip(prompts, completions))
    completion_tokens = sum(len(c) for c in completions)
    flops = forward_flops(non_emb, cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"], prompts, completions)

    def run():
        return engine.score(prompts, completions, top_k=5, entropy=True)

    engine.head = "fused" if args.head == "fused" else "rows"
    scored = run()  # warm-up
    times = time_calls(run, args.repeats, device)
    seconds = sum(times) / len(times)
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "tiny": args.tiny, "config": cfg,
        "params": total_params, "params_non_embedding": non_emb,
        "sequences": args.sequences, "repeats": args.repeats, "token_budget": args.token_budget,
        "tokens": tokens, "completion_tokens": completion_tokens,
        "seconds": seconds, "seconds_all": times,
        "tokens_per_s": tokens / seconds, "completion_tokens_per_s": completion_tokens / seconds,
        "flops_per_call": flops, "tflops": flops / seconds / 1e12,
        "peak_tflops": args.peak_tflops, "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "naive_sequences": args.naive_sequences,
        "naive_tokens_per_s": None, "naive_seconds": None, "ratio": None, "naive_max_abs_diff": None,
    }
    res["head"] = engine.head
    if device.type == "cuda":
        res["max_memory_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30

    if args.head == "both":  # the fused head on the same calls, against the rows head just timed
        engine.head = "fused"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fused = run()  # warm-up
        f_times = time_calls(run, args.repeats, device)
        f_seconds = sum(f_times) / len(f_times)
        res.update(fused_seconds=f_seconds, fused_seconds_all=f_times, fused_tokens_per_s=tokens / f_seconds,
                   fused_ratio=seconds / f_seconds,
                   fused_max_abs_diff=max(float(abs(a.logprobs - b.logprobs).max(initial=0)) for a, b in zip(scored, fused)),
                   fused_entropy_max_abs_diff=max(float(abs(a.entropy - b.entropy).max(initial=0))
                                                  for a, b in zip(scored, fused)),
                   fused_max_memory_allocated_gb=(torch.cuda.max_memory_allocated(device) / 2**30
                                                  if device.type == "cuda" else None))
        engine.head = "rows"

    if args.naive_sequences > 0:
        sub_p, sub_c = prompts[: args.naive_sequences], completions[: args.naive_sequences]
        naive_score(model, sub_p, sub_c, device)  # warm-up on every shape the timed calls meet
        n_times = time_calls(lambda: naive_score(model, sub_p, sub_c, device), args.repeats, device)
        n_seconds = sum(n_times) / len(n_times)
        n_tokens = sum(len(p) + len(c) for p, c in zip(sub_p, sub_c))
        naive = naive_score(model, sub_p, sub_c, device)
        diff = max(float((torch.as_tensor(s.logprobs) - n.float().cpu()).abs().max())
                   for s, n in zip(scored, naive))
        res.update(naive_tokens=n_tokens, naive_seconds=n_seconds, naive_seconds_all=n_times,
                   naive_tokens_per_s=n_tokens / n_seconds, naive_max_abs_diff=diff)
        res["ratio"] = res["tokens_per_s"] / res["naive_tokens_per_s"]

    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
