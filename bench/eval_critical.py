"""cDPO critical tokens against rollout ground truth, on the arithmetic world, in one run.

    python bench/eval_critical.py [--prompts 64] [--n 4] [--truth-rollouts 16] [--k 64]
                                  [--alternatives 64] [--definition paper|replace-top1] [--top 3]

Rolls out tiny-small on arithmetic test prompts, trains its pos/neg contrast models, labels
its incorrect rollouts with p_CE, and builds the ground truth. By default this is the paper's
definition, as the authors' rollout sampling runs it: k continuations of every kept prefix
and `alternatives` sampled replacement tokens, each continued once. The critical token is the
first all-failing kept prefix (labeler.py, 3.). The bench prints precision@top and hit@top of
the lowest-p_CE tokens, next to the highest-entropy tokens and a random pick (its expectation).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-small")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--truth-rollouts", type=int, default=16)
    ap.add_argument("--k", type=int, default=64, help="continuations per kept prefix (replace-top1: per arm)")
    ap.add_argument("--alternatives", type=int, default=64, help="paper: replacement tokens drawn per position")
    ap.add_argument("--recover", type=int, default=3, help="paper: more correct kept continuations than this restart the search")
    ap.add_argument("--definition", default="paper", choices=["paper", "replace-top1"])
    ap.add_argument("--top", type=int, default=3, help="precision@top")
    ap.add_argument("--lake", default=None, help="lake directory (default: a temporary one)")
    args = ap.parse_args()

    from rich.console import Console

    from tokenmill.config import CriticalConfig, SourceConfig, TruthConfig
    from tokenmill.engines import SamplingParams
    from tokenmill.report.summary import render_table
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks import generate, prompts, verify
    from tokenmill.labelers.critical.labeler import CriticalLabeler, critical_truth, precision_at_k

    console = Console()
    lake = Lake(args.lake or tempfile.mkdtemp(prefix="tokenmill-critical-"))
    t0 = time.time()
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=64, seed=0)
    for shard in prompts.load_and_shard(lake, "eval", [SourceConfig(world="arithmetic", n=args.prompts)], 64):
        verify.verify_and_commit(lake, "eval", shard, generate.generate_shard(lake, "eval", shard, "hf", args.model, params))
    labeler = CriticalLabeler(CriticalConfig(top_k=args.top, train="tiny"))  # the recipe docs/BENCHMARKS.md was measured with
    labeler.prepare(lake, "eval")
    for shard in lake.files("rollouts", "eval"):
        labeler.label_shard(lake, "eval", shard)
    t1 = time.time()
    critical_truth(lake, "eval", args.model, TruthConfig(definition=args.definition, rollouts=args.truth_rollouts,
                                                         k=args.k, alternatives=args.alternatives, recover=args.recover))
    console.print(render_table(precision_at_k(lake, "eval", args.top),
                               title=f"critical tokens @{args.top} vs {args.definition} truth ({args.model}, k={args.k}, "
                                     f"alternatives={args.alternatives}; truth {time.time() - t1:.0f} s, "
                                     f"all {time.time() - t0:.0f} s)"))


if __name__ == "__main__":
    main()
