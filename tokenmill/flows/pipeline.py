"""The `pipeline` flow: rollouts → score → label → curate → train → evaluate, one run.

Every stage is its own flow, run here as a subflow, so the Prefect UI shows the chain and
each stage can also run alone:

  rollouts   the policy on the world's train split (`flows/rollouts.py`)
  label      score what is missing, then the labelers (`flows/label.py`)
  evaluate   the base policy on the held-out split
  per arm    curate (its recipe) → train (its settings) → evaluate the trained model
             an arm with `guide` first labels the run with TGDPO's token rewards
             r̂_t = log π_guide(y_t) − log π_ref(y_t), π_guide the guide arm's model;
             an arm with `init` trains from an earlier arm's model (its reference too)

Every stage is idempotent, so a re-run (after a crash, or with one more arm) only does
the work that is missing. Each subflow and model task has a timeout sized from its work
(`RunnerConfig.timeouts`); a stage that fails or times out publishes the markdown artifact
`pipeline-failed-<run>` naming the stage, the error and the commands that resume the run.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from tokenmill.config import Arm, LabelConfig, PipelineConfig, RewardsConfig
from tokenmill.errors import TokenmillError
from tokenmill.flows.curate import curate_flow
from tokenmill.flows.label import label_flow, label_work
from tokenmill.flows.rollouts import rollouts_flow
from tokenmill.flows.runners import with_runner
from tokenmill.flows.train import evaluate_flow, train_flow
from tokenmill.report import artifacts


def check_pipeline(cfg: PipelineConfig) -> None:
    """Every arm's recipe, parameters, objective and guide checked before any work."""
    from tokenmill.sources.worlds import get_world
    from tokenmill.storage.lake import check_run_id
    from tokenmill.curation.curate import get_recipe
    from tokenmill.tasks.train.weighted import check_settings

    check_run_id(cfg.run_id)
    get_world(cfg.world)
    names = [a.name for a in cfg.arms]
    if len(set(names)) != len(names):
        raise TokenmillError(f"pipeline arms must have distinct names, got {names}", fix="rename the repeated arm")
    for i, arm in enumerate(cfg.arms):
        recipe = get_recipe(arm.recipe)
        recipe.params(arm.params)
        check_settings(arm.train.objective, arm.train.weighting, recipe.kind, where=f"arm {arm.name} ({arm.recipe})")
        if arm.guide is not None and arm.guide not in names[:i]:
            raise TokenmillError(f"arm {arm.name}: guide {arm.guide!r} is not an earlier arm",
                                 fix=f"earlier arms: {', '.join(names[:i]) or 'none'}")
        if arm.init is not None and arm.init not in names[:i]:
            raise TokenmillError(f"arm {arm.name}: init {arm.init!r} is not an earlier arm",
                                 fix=f"earlier arms: {', '.join(names[:i]) or 'none'}")
        if arm.train.weighting == "tgdpo" and arm.guide is None:
            raise TokenmillError(f"arm {arm.name}: tgdpo needs a guide arm (its DPO model gives the token rewards)",
                                 fix="set guide to the name of an earlier dpo arm")
        if "critical" not in cfg.labelers and arm.recipe == "cdpo-pairs":
            raise TokenmillError(f"arm {arm.name}: cdpo-pairs needs the critical labeler", fix="add critical to labelers")
        missing = sorted(arm.families_read() - set(cfg.labelers))
        if missing:  # without them the expression reads null labels: weights silently 0
            raise TokenmillError(f"arm {arm.name}: its weight reads labels of {', '.join(missing)}, which the pipeline "
                                 "does not label", fix=f"add {', '.join(missing)} to labelers")
        if "routing" in arm.families_read() and (cfg.teacher or cfg.model) == (small := cfg.label().routing.small):
            raise TokenmillError(f"arm {arm.name}: routing labels a large model's rollouts against the small model "
                                 f"{small}, and this pipeline's rollouts are {small}'s own",
                                 fix="set the pipeline's teacher (its rollouts are labelled against the policy), e.g. "
                                     "teacher: tiny-large")


def guide_rewards(cfg: PipelineConfig, guide_path: str, ref: str | None = None) -> str:
    """Label the run with `dpo` token rewards of the guide model against `ref`, the model the
    guide was trained from (default: the policy); both named by lake path where trained, so
    the config id is the same wherever the lake is mounted. Returns their config id."""
    from tokenmill.labelers.rewards.labeler import RewardsLabeler

    rewards = RewardsConfig(kinds=["dpo"], beta=1.0, dpo_role="guide", ref_role="ref")
    models = {"ref": ref or cfg.model, "guide": guide_path}
    label = LabelConfig(lake=cfg.lake, run_id=cfg.run_id, labelers=["rewards"], engine=cfg.engine, models=models,
                        rewards=rewards, runner=cfg.runner)
    with_runner(label_flow, cfg.runner)(label)
    return RewardsLabeler(rewards, models).config_ids()["dpo"]


def run_arm(cfg: PipelineConfig, arm: Arm, trained: dict[str, dict], at=lambda stage: None) -> dict:
    if arm.guide is not None:
        at(f"arm {arm.name}: guide rewards")
        # TGDPO's r̂ = log π_guide − log π_ref with the guide's own reference: its init model, else the policy
        init = next(a.init for a in cfg.arms if a.name == arm.guide)
        ref = trained[init]["path"] if init is not None else None
        arm = arm.model_copy(update={"params": {**arm.params,
                                                "reward_config": guide_rewards(cfg, trained[arm.guide]["path"], ref)}})
    at(f"arm {arm.name}: curate")
    dataset = curate_flow(cfg.curate(arm))
    at(f"arm {arm.name}: train")
    tcfg = cfg.train(arm, dataset["dataset_id"])
    if arm.init is not None:  # its lake path: the ids stay the same wherever the lake is mounted
        tcfg = tcfg.model_copy(update={"model": trained[arm.init]["path"]})
    model = with_runner(train_flow, cfg.runner, tcfg.work_tokens())(tcfg)
    return {**model, "dataset_rows": dataset["rows"], "arm": arm.name}



def evaluate_arms(cfg: PipelineConfig, trained: dict[str, dict]) -> list[dict]:
    """Held-out accuracy of the base policy and of every trained arm (`model_eval` rows)."""
    models = [{"model": cfg.model, "path": cfg.model, "arm": None}] + [
        {"model": t["artifact_id"], "path": t["local_path"], "arm": name} for name, t in trained.items()]
    return with_runner(evaluate_flow, cfg.runner, cfg.eval.work_tokens() * len(models))(
        cfg.lake, cfg.run_id, models, cfg.eval, cfg.engine, cfg.runner)


@flow(name="pipeline", flow_run_name="pipeline {cfg.run_id}", log_prints=True)
def pipeline_flow(cfg: PipelineConfig) -> dict:
    """Roll out, label, curate, train and evaluate every arm on one run; returns a summary."""
    t0 = time.time()
    check_pipeline(cfg)
    log = get_run_logger()
    stage = ["rollouts"]  # where the night is, for the failure artifact

    def at(name: str) -> None:
        stage[0] = name

    try:
        rcfg = cfg.rollouts()
        rolled = with_runner(rollouts_flow, cfg.runner, rcfg.work_tokens())(rcfg)
        log.info("rollouts: %d (%d tokens)", rolled["rollouts"], rolled["tokens"])
        at("label")
        with_runner(label_flow, cfg.runner, label_work(rcfg.work_tokens(), cfg.labelers))(cfg.label())
        trained: dict[str, dict] = {}
        for arm in cfg.arms:
            trained[arm.name] = run_arm(cfg, arm, trained, at)
        at("evaluate")
        evals = evaluate_arms(cfg, trained)
    except Exception as e:  # a failed or timed-out stage: say where, why, and how to resume
        artifacts.pipeline_failure(cfg.model_dump(mode="json"), stage[0], e)
        log.error("pipeline %s stopped at stage %s: %s", cfg.run_id, stage[0], e)
        raise
    out = {"run_id": cfg.run_id, "lake": cfg.lake, "rollouts": rolled["rollouts"], "arms": trained, "eval": evals,
           "seconds": round(time.time() - t0, 1)}
    artifacts.pipeline_summary(out)
    return out
