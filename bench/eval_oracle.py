"""Token labels scored against the process oracle (the arithmetic world's step checker), in one run.

    python bench/eval_oracle.py [--model tiny-small] [--prompts 128] [--n 4] [--small tiny-small]

Rolls out the policy on arithmetic training prompts at temperature 1, labels the rollouts
(rewards: grpo, tempo, d3s, entropy; critical with the `tiny` contrast recipe; process; and,
when the policy is not `--small`, R2R routing against that small model with the outcome
verifier), and prints, per method, how often each rollout's first wrong token is its top-1 / top-3 by the
method's score, and the token-level AUC (`tokenmill/studies/oracle.py`).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-small")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--small", default="tiny-small",
                    help="R2R's small model: routing labels when --model is another (larger) model")
    ap.add_argument("--lake", default=None, help="lake directory (default: a temporary one)")
    args = ap.parse_args()

    from rich.console import Console

    from tokenmill.config import CriticalConfig, RewardsConfig, RoutingConfig, SourceConfig
    from tokenmill.engines import SamplingParams
    from tokenmill.labelers.critical.labeler import CriticalLabeler
    from tokenmill.labelers.process.labeler import ProcessLabeler
    from tokenmill.labelers.rewards.labeler import RewardsLabeler
    from tokenmill.labelers.routing.labeler import RoutingLabeler
    from tokenmill.report.summary import render_table
    from tokenmill.storage.catalog import query
    from tokenmill.storage.lake import Lake
    from tokenmill.studies.oracle import oracle_scores
    from tokenmill.tasks import generate, prompts, verify

    console = Console(width=160)
    lake = Lake(args.lake or tempfile.mkdtemp(prefix="tokenmill-oracle-"))
    t0 = time.time()
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=96, seed=0)
    sources = [SourceConfig(world="arithmetic", n=args.prompts, split="train")]
    for shard in prompts.load_and_shard(lake, "oracle", sources, 64):
        verify.verify_and_commit(lake, "oracle", shard, generate.generate_shard(lake, "oracle", shard, "hf", args.model, params))
    labelers = [RewardsLabeler(RewardsConfig(kinds=["grpo", "tempo", "d3s", "entropy"])),
                CriticalLabeler(CriticalConfig(train="tiny")), ProcessLabeler()]
    if args.model != args.small:
        labelers.append(RoutingLabeler(RoutingConfig(small=args.small)))
    seconds = {}
    for labeler in labelers:
        t1 = time.time()
        labeler.prepare(lake, "oracle")
        for shard in lake.files("rollouts", "oracle"):
            labeler.label_shard(lake, "oracle", shard)
        seconds[labeler.name] = round(time.time() - t1)
    console.print(f"labelling seconds: {seconds}")
    counts = query(lake, """SELECT r.verdict, count(DISTINCT r.rollout_id) AS rollouts,
                                   count(DISTINCT r.rollout_id) FILTER (WHERE p.first_error) AS with_error
                            FROM rollouts r LEFT JOIN process_labels p USING (run_id, rollout_id)
                            WHERE r.run_id = 'oracle' GROUP BY 1 ORDER BY 1""", {})
    console.print(render_table(counts, title="rollouts and their first errors (process oracle)"))
    console.print(render_table(oracle_scores(lake, "oracle", (1, 3)),
                               title=f"first wrong token vs the oracle ({args.model}, {args.prompts} prompts × {args.n}; "
                                     f"{time.time() - t0:.0f} s)"))


if __name__ == "__main__":
    main()
