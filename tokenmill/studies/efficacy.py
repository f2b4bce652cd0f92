"""Do token-level labels pay off? The papers' direction, in miniature, measured.

On the arithmetic world with `tiny-small` as the policy, for each seed s the `pipeline`
flow rolls out the policy on training prompts (sampling seed s), labels the rollouts
(rewards; critical with contrast models trained with seed s), and trains one model per arm
(training seed s) from the same data:

  dpo         plain DPO on (correct, incorrect) pairs of one prompt
  cdpo        the same pairs, rejected tokens weighted by cDPO's 1 − p_CE
  sft         plain SFT on the correct rollouts
  sft-critical  SFT on the correct rollouts, each token weighted by its cDPO p_CE: a
              correct outcome can hide wrong steps ("44*2=84" then a lucky answer), and
              tokens the negative model prefers count less
  sft-reward  SFT on every rollout, token weights max(A_grpo, 0): correct rollouts of
              prompts the policy sometimes fails count most, failures and prompts it
              always solves not at all

then measures greedy accuracy on held-out test prompts. The summary gives, per arm, mean
± standard deviation over seeds, and the paired difference to its plain counterpart.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tokenmill.config import Arm, CriticalConfig, EvalConfig, PipelineConfig, SamplingConfig, named_arms

COMPARISONS = {"cdpo": "dpo", "sft-critical": "sft", "sft-reward": "sft", "sft-process": "sft"}  # arm → the plain arm it is compared with


def default_arms(dpo_steps: int = 100, sft_steps: int = 150, batch: int = 16) -> list[Arm]:
    """The study's arms; learning rates and β from a sweep on seed 0 (docs/BENCHMARKS.md)."""
    return named_arms(["dpo", "cdpo", "sft", "sft-critical", "sft-reward"], batch=batch,
                      dpo={"steps": dpo_steps, "lr": 1e-5, "beta": 0.5}, sft={"steps": sft_steps, "lr": 2e-5})


def study_configs(lake: str, seeds: list[int], prompts: int = 512, samples: int = 8, eval_prompts: int = 500,
                  critical_steps: int = 150, arms: list[Arm] | None = None, engine: str = "hf",
                  run_prefix: str = "efficacy") -> list[PipelineConfig]:
    """One pipeline per seed; everything random in it is seeded by that seed."""
    out = []
    arms = arms or default_arms()
    # rewards and critical always (the study's own arms); any other family an arm's weights read
    label = ["rewards", "critical", *sorted(set().union(*(a.families_read() for a in arms)) - {"rewards", "critical"})]
    for s in seeds:
        seeded = [a.model_copy(update={"train": a.train.model_copy(update={"seed": s})}) for a in arms]
        out.append(PipelineConfig(
            lake=lake, run_id=f"{run_prefix}-s{s}", model="tiny-small", world="arithmetic", prompts=prompts, engine=engine,
            sampling=SamplingConfig(n=samples, temperature=1.0, max_tokens=64, seed=s), labelers=label,
            # the tiny models' contrast recipe (full fine-tune, 150 steps) docs/BENCHMARKS.md's table was measured with
            critical=CriticalConfig(train="tiny", train_steps=critical_steps, seed=s, include_correct=True), arms=seeded,
            eval=EvalConfig(world="arithmetic", split="test", prompts=eval_prompts, max_tokens=64)))
    return out


def run_study(configs: list[PipelineConfig]) -> pa.Table:
    """Run every seed's pipeline; one row per (seed, model): seed, arm, accuracy, prompts, train rows."""
    from tokenmill.flows.pipeline import pipeline_flow

    rows = []
    for cfg in configs:
        seed, out = cfg.sampling.seed, pipeline_flow(cfg)
        data = {name: a["dataset_rows"] for name, a in out["arms"].items()}
        for r in out["eval"]:
            arm = r["arm"] or "base"
            rows.append({"seed": seed, "arm": arm, "accuracy": r["accuracy"], "prompts": r["prompts"],
                         "train_rows": data.get(arm)})
    return pa.Table.from_pylist(rows)


def summarise(results: pa.Table) -> pa.Table:
    """Per arm: seeds, mean ± std of held-out accuracy, and the mean paired difference (± std)
    to the arm it is compared with (same seed, same data)."""
    acc: dict[str, dict[int, float]] = {}
    for r in results.to_pylist():
        acc.setdefault(r["arm"], {})[r["seed"]] = r["accuracy"]
    rows = []
    for arm, by_seed in acc.items():
        a = np.array(list(by_seed.values()))
        row = {"arm": arm, "seeds": len(a), "accuracy_mean": round(float(a.mean()), 4),
               "accuracy_std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 4),
               "min": round(float(a.min()), 4), "max": round(float(a.max()), 4), "vs": None, "diff_mean": None,
               "diff_std": None, "wins": None}
        if arm in COMPARISONS and COMPARISONS[arm] in acc:
            base = acc[COMPARISONS[arm]]
            d = np.array([by_seed[s] - base[s] for s in by_seed if s in base])
            row.update(vs=COMPARISONS[arm], diff_mean=round(float(d.mean()), 4),
                       diff_std=round(float(d.std(ddof=1)) if len(d) > 1 else 0.0, 4), wins=f"{int((d > 0).sum())}/{len(d)}")
        rows.append(row)
    return pa.Table.from_pylist(rows)
