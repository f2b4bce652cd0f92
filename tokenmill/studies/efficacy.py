"""Do token-level labels pay off? The papers' direction, in miniature, measured.

On the arithmetic world with a policy (`EfficacyConfig.policy`, tiny-small by default), for
each seed s the `pipeline` flow rolls out the teacher (`EfficacyConfig.teacher`, tiny-large
by default — distillation; None: the policy itself) on training prompts (sampling seed s),
labels the rollouts (rewards; critical with contrast models trained with seed s; process,
the arithmetic world's step checker, where an arm reads it), and trains one model per arm
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
  sft-process the oracle's upper bound: every rollout's tokens before its first wrong step
  sft-entropy SFT on the correct rollouts' high-entropy tokens only (the 80/20 rule)
  sft-routing SFT on the correct rollouts weighted by R2R's routing class of each token
              against the policy (identical 1, neutral 0, divergent 2): the teacher's
              tokens where the policy's own choice would make the answer worse count
              double, those where it would do as well not at all
  dpo-on-sft  plain DPO from the sft model (also its reference): SFT then DPO, so the
              pairs are in the distribution of the model they train
  cdpo-on-sft cDPO from the sft model likewise
  tgdpo-on-sft, tdpo-on-sft  TGDPO (guide: dpo-on-sft) and TDPO from the sft model (not
              in the defaults; `--arm`)

then measures greedy accuracy on the same held-out test prompts. The summary gives, per
arm, the mean over seeds with its 95 % t interval, and the paired difference (same seed,
same data) to its sequence-level counterpart (`COMPARISONS`) and to the base model: mean
d̄ = (1/n) Σ_s (acc_arm,s − acc_other,s) and interval d̄ ± t₀.₉₇₅(n − 1) · s_d / √n, s_d
the sample std of the differences. `efficacy_flow.py` is the flow; the plot is
`report.plots.plot_efficacy`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tokenmill.config import (ARM_NAMES, Arm, CriticalConfig, EvalConfig, PipelineConfig, RewardsConfig, RoutingConfig,
                              SamplingConfig, named_arms)
from tokenmill.labelers.rewards.config import REWARD_KINDS
from tokenmill.studies.efficacy_config import EfficacyConfig

COMPARISONS = {"cdpo": "dpo", "tgdpo": "dpo", "tdpo": "dpo", "sft-critical": "sft", "sft-reward": "sft",
               "sft-process": "sft", "sft-entropy": "sft", "sft-routing": "sft", "cdpo-on-sft": "dpo-on-sft",
               "tgdpo-on-sft": "dpo-on-sft", "tdpo-on-sft": "dpo-on-sft"}  # arm → the plain arm it is compared with


def default_arms() -> list[Arm]:
    """The study's arms with EfficacyConfig's settings (SFT side from a sweep on seed 0; DPO
    side cDPO's authors' lr, β and schedule — docs/BENCHMARKS.md)."""
    cfg = EfficacyConfig()
    return named_arms(cfg.arms, batch=cfg.batch, dpo=cfg.dpo, sft=cfg.sft)


def study_configs(lake: str, seeds: list[int], prompts: int = 512, samples: int = 8, eval_prompts: int = 500,
                  critical_steps: int = 150, arms: list[Arm] | None = None, engine: str = "hf",
                  run_prefix: str = "efficacy", model: str = "tiny-small",
                  teacher: str | None = None) -> list[PipelineConfig]:
    """One pipeline per seed; everything random in it is seeded by that seed."""
    out = []
    arms = arms or default_arms()
    # rewards always (pairs and verdicts); critical where an arm reads it; any other family an arm's weights read
    read = set().union(*(a.families_read() for a in arms)) | ({"critical"} if any(a.recipe == "cdpo-pairs" for a in arms) else set())
    label = ["rewards", *sorted(read - {"rewards"})]
    # only the reward kinds an arm reads (the others score the run with more models: dpo, entropy, rlpr);
    # grpo, which scores nothing, where none is read — the pairs read verdicts, not rewards
    read_kinds = {kind for a in arms for fam, kind in a.scopes_read() if fam == "rewards"}
    kinds = [k for k in REWARD_KINDS if k in read_kinds] or ["grpo"]
    for s in seeds:
        seeded = [a.model_copy(update={"train": a.train.model_copy(update={"seed": s})}) for a in arms]
        out.append(PipelineConfig(
            lake=lake, run_id=f"{run_prefix}-s{s}", model=model, teacher=teacher, world="arithmetic", prompts=prompts, engine=engine,
            sampling=SamplingConfig(n=samples, temperature=1.0, max_tokens=64, seed=s), labelers=label,
            # the tiny models' contrast recipe (full fine-tune, 150 steps) docs/BENCHMARKS.md's table was measured with
            critical=CriticalConfig(train="tiny", train_steps=critical_steps, seed=s, include_correct=True),
            rewards=RewardsConfig(kinds=kinds), arms=seeded,
            routing=RoutingConfig(small=model, features=False),  # labels to weight tokens: no router is trained here
            eval=EvalConfig(world="arithmetic", split="test", prompts=eval_prompts, max_tokens=64)))
    return out


def configs_for(cfg: EfficacyConfig) -> list[PipelineConfig]:
    """The study's pipelines, one per seed, from its settings."""
    arms = named_arms(cfg.arms, batch=cfg.batch, dpo=cfg.dpo, sft=cfg.sft)
    return study_configs(cfg.lake, cfg.seeds, prompts=cfg.prompts, samples=cfg.samples, eval_prompts=cfg.eval_prompts,
                         critical_steps=cfg.critical_steps, arms=arms, engine=cfg.engine, run_prefix=cfg.run_prefix,
                         model=cfg.policy, teacher=cfg.teacher)


def results_of(outputs: list[tuple[int, dict]]) -> pa.Table:
    """One row per (seed, model) from each seed's pipeline output (its `model_eval` rows):
    seed, arm, accuracy, prompts, train rows."""
    rows = []
    for seed, out in outputs:
        data = {name: a["dataset_rows"] for name, a in out["arms"].items()}
        for r in out["eval"]:
            arm = r["arm"] or "base"
            rows.append({"seed": seed, "arm": arm, "accuracy": r["accuracy"], "prompts": r["prompts"],
                         "train_rows": data.get(arm)})
    return pa.Table.from_pylist(rows)


def run_study(configs: list[PipelineConfig]) -> pa.Table:
    """Run every seed's pipeline (no enclosing flow: `studies/efficacy_flow.py` is the flow); `results_of` them."""
    from tokenmill.flows.pipeline import pipeline_flow

    return results_of([(cfg.sampling.seed, pipeline_flow(cfg)) for cfg in configs])


# Student's t 0.975 quantiles, df 1 … 30 (beyond, the Cornish–Fisher expansion around z)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (a 95 % two-sided interval)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_interval(diffs: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the mean paired difference and its 95 % t interval, mean ± t₀.₉₇₅(n−1)·s/√n
    (s the sample std); the interval is the mean itself for one pair."""
    d = np.asarray(diffs, np.float64)
    m = float(d.mean())
    if len(d) < 2:
        return m, m, m
    half = t975(len(d) - 1) * float(d.std(ddof=1)) / np.sqrt(len(d))
    return m, m - half, m + half


def summarise(results: pa.Table) -> pa.Table:
    """Per arm: seeds, mean ± std of held-out accuracy, and the paired difference to the arm it
    is compared with (same seed, same data) and to the base model: mean, std and 95 % t interval."""
    acc: dict[str, dict[int, float]] = {}
    for r in results.to_pylist():
        acc.setdefault(r["arm"], {})[r["seed"]] = r["accuracy"]
    rows = []
    for arm, by_seed in acc.items():
        a = np.array(list(by_seed.values()))
        _, lo, hi = paired_interval(a)  # the same t interval, of the mean accuracy
        row = {"arm": arm, "seeds": len(a), "accuracy_mean": round(float(a.mean()), 4),
               "accuracy_std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 4),
               "accuracy_low": round(lo, 4), "accuracy_high": round(hi, 4),
               "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}
        for key, other in (("vs", COMPARISONS.get(arm)), ("vs_base", "base" if arm != "base" else None)):
            prefix = "" if key == "vs" else "base_"
            row.update({key: None, f"{prefix}diff_mean": None, f"{prefix}diff_low": None, f"{prefix}diff_high": None,
                        f"{prefix}wins": None})
            if other and other in acc:
                d = np.array([by_seed[s] - acc[other][s] for s in by_seed if s in acc[other]])
                m, lo, hi = paired_interval(d)
                row.update({key: other, f"{prefix}diff_mean": round(m, 4), f"{prefix}diff_low": round(lo, 4),
                            f"{prefix}diff_high": round(hi, 4), f"{prefix}wins": f"{int((d > 0).sum())}/{len(d)}"})
        rows.append(row)
    order = {"base": -1, **{n: i for i, n in enumerate(ARM_NAMES)}}  # base first, then the arms' fixed order
    rows.sort(key=lambda r: (order.get(r["arm"], len(order)), r["arm"]))
    return pa.Table.from_pylist(rows)


def efficacy_table(summary: list[dict]) -> pa.Table:
    """The summary as the CLI and the docs print it: one column per figure, intervals as
    `mean [low, high]`, narrow enough for an 80-column terminal."""
    def iv(m, lo, hi) -> str | None:
        return None if m is None else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    return pa.Table.from_pylist([
        {"arm": r["arm"], "seeds": r["seeds"],
         "accuracy": f"{r['accuracy_mean']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}]",
         "vs": r["vs"], "Δ vs it": iv(r["diff_mean"], r["diff_low"], r["diff_high"]), "wins": r["wins"],
         "Δ vs base": iv(r["base_diff_mean"], r["base_diff_low"], r["base_diff_high"])} for r in summary])
