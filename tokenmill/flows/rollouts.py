"""The `rollouts` flow: sources → generate → verify → lake.

Flows only compose. Tasks take and return small values (lake URI, run id, staging
paths, counts); every intermediate result is a Parquet file in the lake's staging
area, so a retried or re-run task finds finished shards and skips them.

  load-prompts         sources → `prompts` table + prompt shards (staging)
  generate-shard ×S×M  prompt shard → generated rollouts + tokens (staging)   [retries]
  commit-shard   ×S×M  verify, then commit `tokens` and `rollouts` to the lake
"""

from __future__ import annotations

import time
from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill import ids
from tokenmill.config import RolloutConfig
from tokenmill.engines import SamplingParams
from tokenmill.errors import TokenmillError
from tokenmill.flows.naming import run_name
from tokenmill.models.chat import PromptFormat
from tokenmill.flows.runners import model_tasks, on_ray, timed
from tokenmill import progress
from tokenmill.report import artifacts
from tokenmill.storage.lake import Lake
from tokenmill.tasks import generate as gen_stage
from tokenmill.tasks import prompts as prompt_stage
from tokenmill.tasks import pass_at_k
from tokenmill.tasks import verify as verify_stage


@task(name="load-prompts", cache_policy=NONE)
def load_prompts(cfg: RolloutConfig) -> list[str]:
    shards = prompt_stage.load_and_shard(Lake(cfg.lake), cfg.run_id, cfg.sources, cfg.shard_size,
                                         models=cfg.models, engine_options=cfg.engine_options,
                                         fmt=prompt_stage.prompt_format(cfg))
    get_run_logger().info("run %s: %d prompt shards", cfg.run_id, len(shards))
    return shards


def _retry_unless_user_error(task, task_run, state) -> bool:
    """Retry transient failures (an engine crash, OOM), not input the user must fix."""
    return not isinstance(state.result(raise_on_failure=False), TokenmillError)


@task(name="generate-shard", retries=2, retry_delay_seconds=2, cache_policy=NONE,
      retry_condition_fn=_retry_unless_user_error,
      task_run_name=run_name("generate {model} {shard}"))
def generate_shard(lake: str, run_id: str, shard: str, engine: str, model: str, sampling: dict,
                   engine_options: dict, prompt_format: dict | None = None) -> str:
    fmt = PromptFormat(**prompt_format) if prompt_format else None
    out = gen_stage.generate_shard(Lake(lake), run_id, shard, engine, model, SamplingParams(**sampling), engine_options,
                                   fmt)
    progress.advance("generate")
    return out


@task(name="commit-shard", retries=1, cache_policy=NONE, retry_condition_fn=_retry_unless_user_error,
      task_run_name=run_name("verify+commit {generated}"))
def commit_shard(lake: str, run_id: str, shard: str, generated: str) -> dict:
    counts = verify_stage.verify_and_commit(Lake(lake), run_id, shard, generated)
    progress.advance("verify + commit")
    return counts


@task(name="pass-at-k", retries=1, cache_policy=NONE, task_run_name=run_name("pass@k {run_id}"))
def commit_pass_at_k(lake: str, run_id: str) -> int:
    """pass@k per source × model over the run's verified rollouts → `pass_at_k`."""
    return pass_at_k.commit(Lake(lake), run_id).num_rows


@flow(name="rollouts", flow_run_name="rollouts {cfg.run_id}", log_prints=True)
def rollouts_flow(cfg: RolloutConfig) -> dict:
    """Generate, verify and store rollouts for every (model, prompt shard)."""
    t0 = time.time()
    prompt_stage.check_run(cfg)  # bad input fails before anything touches the lake
    shards = load_prompts(cfg)
    sampling = cfg.sampling.model_dump()
    fmt = asdict(prompt_stage.prompt_format(cfg))
    jobs = [(m, s) for m in cfg.models for s in shards]
    generate = timed(generate_shard, cfg.runner, cfg.shard_tokens())  # a hung engine frees its slot
    progress.start("generate", len(jobs))
    progress.start("verify + commit", len(jobs))
    if on_ray():  # every shard on the cluster at once, then the (cheap) commits
        generated = model_tasks(cfg.runner, [(generate, (cfg.lake, cfg.run_id, shard, cfg.engine, model, sampling,
                                                               cfg.engine_options, fmt), {}) for model, shard in jobs])
        commits = [commit_shard.submit(cfg.lake, cfg.run_id, shard, g) for (_, shard), g in zip(jobs, generated)]
    else:  # one engine uses every core: generate one shard at a time, commit alongside
        commits = []
        for model, shard in jobs:
            g = generate(cfg.lake, cfg.run_id, shard, cfg.engine, model, sampling, cfg.engine_options, fmt)
            commits.append(commit_shard.submit(cfg.lake, cfg.run_id, shard, g))
    counts = [c.result() for c in commits]
    commit_pass_at_k(cfg.lake, cfg.run_id)
    artifacts.rollouts_summary(cfg.lake, cfg.run_id)
    return {
        "run_id": cfg.run_id,
        "lake": cfg.lake,
        "rollouts": sum(c["rollouts"] for c in counts),  # what the run holds of this work
        "added": sum(c["added"] for c in counts),  # what this execution added
        "tokens": sum(c["tokens"] for c in counts),
        "seconds": round(time.time() - t0, 1),
        "config_hash": ids.content_id(cfg.model_dump_json(exclude={"run_id"})),
    }
