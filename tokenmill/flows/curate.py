"""The `curate` flow: one recipe over labelled runs → a token-weighted dataset in the lake.

  curate   one task: recipe query (DuckDB) → dataset table → shards + manifest under
           `_datasets/<id>/`; the same recipe, parameters, runs and content → the same
           id, written once
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.config import CurateConfig
from tokenmill.flows.rollouts import _retry_unless_user_error
from tokenmill.report import artifacts
from tokenmill.storage.lake import check_run_id


@task(name="curate", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name="{cfg.recipe} over {cfg.runs}")
def curate_task(cfg: CurateConfig) -> dict:
    from tokenmill.curation.curate import curate

    return curate(cfg)


@flow(name="curate", flow_run_name="curate {cfg.recipe}", log_prints=True)
def curate_flow(cfg: CurateConfig) -> dict:
    """Curate a dataset from labelled runs with a recipe; returns its manifest."""
    for run in cfg.runs:
        check_run_id(run)
    m = curate_task(cfg)
    get_run_logger().info("dataset %s (%s, %s): %d rows, %d tokens", m["dataset_id"], m["kind"], m["recipe"], m["rows"],
                          m["tokens"])
    artifacts.dataset_summary(cfg.lake, m)
    return m
