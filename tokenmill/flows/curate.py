"""The `curate` flow: one recipe over labelled runs → a token-weighted dataset in the lake.

  curate   one task: recipe query (DuckDB) → dataset table → shards + manifest under
           `_datasets/<id>/`; the same recipe, parameters, runs and content → the same
           id, written once
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.config import CurateConfig
from tokenmill.flows.rollouts import _retry_unless_user_error
from tokenmill.storage.lake import Lake, check_run_id


def curate_dataset(cfg: CurateConfig) -> dict:
    """The dataset's manifest (plus `seconds`): the plain function the task and CLI share."""
    from tokenmill import datasets as D
    from tokenmill.tasks.curate import run_recipe

    t0 = time.time()
    lake = Lake(cfg.lake)
    recipe, params, rows = run_recipe(lake, cfg.recipe, cfg.runs, cfg.params)
    manifest = D.write(lake, D.build(recipe.kind, rows), recipe=recipe.name, kind=recipe.kind, params=params, runs=cfg.runs)
    return {**manifest, "seconds": round(time.time() - t0, 2)}


@task(name="curate", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="{cfg.recipe} over {cfg.runs}")
def curate_task(cfg: CurateConfig) -> dict:
    return curate_dataset(cfg)


@flow(name="curate", flow_run_name="curate {cfg.recipe}", log_prints=True)
def curate_flow(cfg: CurateConfig) -> dict:
    """Curate a dataset from labelled runs with a recipe; returns its manifest."""
    for run in cfg.runs:
        check_run_id(run)
    m = curate_task(cfg)
    get_run_logger().info("dataset %s (%s, %s): %d rows, %d tokens", m["dataset_id"], m["kind"], m["recipe"], m["rows"],
                          m["tokens"])
    return m
