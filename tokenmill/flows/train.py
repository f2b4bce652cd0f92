"""The `train-router` flow: train R2R's router on a run's routing labels, then evaluate
routed generation (small model + large model on the router's tokens) on held-out prompts.

  train-router   one task: features + labels from the lake → router artifact (reused if present)
  eval-routing   one task: small-only, large-only, router, random at equal share → `routing_eval`

Later training tasks (weighted SFT, DPO) join this module as their own flows.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.config import RouterConfig
from tokenmill.flows.rollouts import _retry_unless_user_error
from tokenmill.storage.lake import Lake, check_run_id


@task(name="train-router", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="router of {cfg.run_id}")
def train_router_task(cfg: RouterConfig) -> dict:
    from tokenmill.tasks.train.router import train_router

    return train_router(Lake(cfg.lake), cfg.run_id, cfg.config_id, steps=cfg.steps, lr=cfg.lr, batch=cfg.batch,
                        val_frac=cfg.val_frac, recall=cfg.recall, seed=cfg.seed)


@task(name="eval-routing", cache_policy=NONE, retry_condition_fn=_retry_unless_user_error,
      task_run_name="routed generation on {cfg.eval_world}")
def eval_routing_task(cfg: RouterConfig, router_path: str) -> list[dict]:
    from tokenmill.tasks.routed import evaluate_routing

    table = evaluate_routing(Lake(cfg.lake), router_path, cfg.eval_world, cfg.eval_prompts, cfg.eval_split,
                             cfg.max_tokens, cfg.thresholds, seed=cfg.seed)
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
    return {"router": router, "eval": evaluation, "seconds": round(time.time() - t0, 1)}
