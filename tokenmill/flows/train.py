"""Training flows.

`train-router`: R2R's router on a run's routing labels, then routed generation (small
model + large model on the router's tokens) on held-out prompts.
  train-router   one task: features + labels from the lake → router artifact (reused if present)
  eval-routing   one task: small-only, large-only, router, random at equal share → `routing_eval`

`train-probe`: a hallucination probe per model of a run labelled by `hallucination`.
  train-probe ×M  hidden states scored where missing → probe artifact + `probe_eval` (held-out AUCs)

`train`: token-weighted SFT / DPO (cDPO, TGDPO) of a base model on a curated dataset.
  train-weighted  one task: dataset → model artifact (lineage) + `train_metrics`; reused if present

`evaluate`: greedy held-out accuracy of models on a world → `model_eval`.
  evaluate ×M  one task per model; an evaluation already in the lake is not repeated
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.config import EvalConfig, ProbeConfig, RouterConfig, RunnerConfig, TrainConfig
from tokenmill.flows.rollouts import _retry_unless_user_error
from tokenmill.flows.report import report_task
from tokenmill.flows.runners import model_tasks, timed
from tokenmill.report import artifacts
from tokenmill.storage.lake import Lake, check_run_id


@task(name="train-router", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="router of {cfg.run_id}")
def train_router_task(cfg: RouterConfig) -> dict:
    from tokenmill.tasks.train.router import train_router

    return train_router(Lake(cfg.lake), cfg.run_id, settings=cfg)


@task(name="eval-routing", cache_policy=NONE, retry_condition_fn=_retry_unless_user_error,
      task_run_name="routed generation on {cfg.eval_world}")
def eval_routing_task(cfg: RouterConfig, router_path: str) -> list[dict]:
    from tokenmill.tasks.train.routed import evaluate_routing

    table = evaluate_routing(Lake(cfg.lake), router_path, settings=cfg)
    return table.select(["policy", "threshold", "large_share", "accuracy", "tokens"]).to_pylist()


@flow(name="train-router", flow_run_name="router {cfg.run_id}", log_prints=True)
def router_flow(cfg: RouterConfig) -> dict:
    """Train the router of a labelled run; evaluate routed generation unless told not to."""
    t0 = time.time()
    check_run_id(cfg.run_id)
    router = train_router_task(cfg)
    get_run_logger().info("router %s: threshold %.4f, validation positive rate %.3f at recall %.3f",
                          router["artifact_id"], router["threshold"], router["val"]["positive_rate"], router["val"]["recall"])
    evaluation = eval_routing_task(cfg, router["path"]) if cfg.evaluate else []
    if evaluation:
        report_task(cfg.lake, cfg.run_id)  # adds the routing curve
    return {"router": router, "eval": evaluation, "seconds": round(time.time() - t0, 1)}


@task(name="train-probe", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="probe {model}")
def train_probe_task(cfg: ProbeConfig, model: str) -> dict:
    from tokenmill.tasks.train.probe import train_probe

    return train_probe(Lake(cfg.lake), cfg.run_id, model, settings=cfg)


def probe_models(cfg: ProbeConfig) -> tuple[list[str], dict[str, str]]:
    """(models to probe, {model: why not}). Named models are all probed (and fail loudly if
    they cannot be); of the models found in the run, those whose spans cannot support a
    probe (too few prompts to hold some out) are skipped, so one thin model does not cost
    the others their probes."""
    from tokenmill.errors import TokenmillError
    from tokenmill.storage.catalog import query
    from tokenmill.tasks.train.probe import ProbeDataError, hallucination_config, probe_spans

    lake = Lake(cfg.lake)
    cfg_id = hallucination_config(lake, cfg.run_id, cfg.config_id)
    if cfg.models:
        return cfg.models, {}
    found = query(lake, """SELECT DISTINCT model FROM hallucination_spans WHERE run_id = ? AND config_id = ?
                           AND label IN ('supported', 'not_supported') ORDER BY 1""", [cfg.run_id, cfg_id])
    models, skipped = [], {}
    for m in found.column("model").to_pylist():
        try:
            probe_spans(lake, cfg.run_id, cfg_id, m, cfg.val_frac, cfg.seed, cfg.threshold_frac)
            models.append(m)
        except ProbeDataError as e:
            skipped[m] = str(e)
    if skipped and not models:
        raise TokenmillError(f"probe: no model of run {cfg.run_id!r} can be probed: " + "; ".join(skipped.values()),
                             fix="label more prompts")
    return models, skipped


@flow(name="train-probe", flow_run_name="probes {cfg.run_id}", log_prints=True)
def probe_flow(cfg: ProbeConfig) -> dict:
    """Train and evaluate a hallucination probe for each model of a labelled run."""
    t0 = time.time()
    check_run_id(cfg.run_id)
    log = get_run_logger()
    models, skipped = probe_models(cfg)
    for m, why in skipped.items():
        log.warning("no probe for %s: %s", m, why)
    probes = {m: train_probe_task(cfg, m) for m in models}
    for m, p in probes.items():
        aucs = (p["auc"]["span:probe"], p["auc"]["span:1 - min_prob"])  # null where a class is missing
        log.info("probe %s of %s: layer %d, span AUC %s (1 - min_prob %s)", p["artifact_id"], m, p["layer"],
                 *("n/a" if a is None else f"{a:.3f}" for a in aucs))
    if probes:
        report_task(cfg.lake, cfg.run_id)  # adds the probes' ROC curves
    return {"probes": probes, "skipped": skipped, "seconds": round(time.time() - t0, 1)}


@task(name="train-weighted", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="{cfg.objective}/{cfg.weighting} {cfg.model} on {cfg.dataset_id}")
def train_weighted_task(cfg: TrainConfig) -> dict:
    from tokenmill.tasks.train.weighted import train_weighted

    return train_weighted(Lake(cfg.lake), cfg.dataset_id, cfg.model, settings=cfg, run_id=cfg.run_id)


@flow(name="train", flow_run_name="train {cfg.objective} {cfg.dataset_id}", log_prints=True)
def train_flow(cfg: TrainConfig) -> dict:
    """Train a base model on a curated dataset; returns the model artifact's record."""
    [out] = model_tasks(cfg.runner, [(timed(train_weighted_task, cfg.runner, cfg.work_tokens()), (cfg,), {})])
    get_run_logger().info("model %s (%s, %s)%s", out["artifact_id"], cfg.objective, cfg.weighting,
                          " reused" if out["reused"] else f": final loss {out['final_loss']:.4f}")
    artifacts.model_summary(cfg.lake, out, cfg.objective, cfg.weighting)
    return out


@task(name="evaluate", cache_policy=NONE, retry_condition_fn=_retry_unless_user_error,
      task_run_name="evaluate {model}")
def evaluate_task(lake: str, run_id: str, model: str, path: str, cfg: EvalConfig, arm: str | None, engine: str) -> dict:
    from tokenmill.tasks.evaluate import evaluate_model

    return evaluate_model(Lake(lake), run_id, model, path, cfg, arm=arm, engine=engine)


@flow(name="evaluate", flow_run_name="evaluate on {cfg.world}/{cfg.split}", log_prints=True)
def evaluate_flow(lake: str, run_id: str, models: list[dict], cfg: EvalConfig, engine: str = "hf",
                  runner: RunnerConfig = RunnerConfig()) -> list[dict]:
    """Held-out accuracy of each {model, path, arm} → `model_eval` rows."""
    task = timed(evaluate_task, runner, cfg.work_tokens())
    rows = model_tasks(runner, [(task, (lake, run_id, m["model"], m["path"], cfg, m.get("arm"), engine), {})
                                for m in models])
    for r in rows:
        get_run_logger().info("%s (%s): accuracy %.3f on %d %s/%s prompts", r["model"], r["arm"] or "base",
                              r["accuracy"], r["prompts"], cfg.world, cfg.split)
    artifacts.eval_summary(lake, run_id, rows)
    return rows
