"""Prompt stage: check a run's inputs, load its sources, commit `prompts`, cut shards.

`check_run` (run id, engine and its options, models, lake URI) and the source loading in
`load_and_shard` both happen before the first write, so a bad run leaves the lake unchanged; `preflight`
does all of it up front for the CLI, before Prefect starts.
"""

from __future__ import annotations

from tokenmill import ids
from tokenmill.config import RolloutConfig, SourceConfig
from tokenmill.engines import check_engine
from tokenmill.models.registry import resolve_model
from tokenmill.sources import Prompt, build_source, prompts_from_table, prompts_table
from tokenmill.storage.lake import Lake, check_run_id


def load_sources(sources: list[SourceConfig]) -> list[Prompt]:
    prompts: list[Prompt] = []
    for src in sources:
        prompts.extend(build_source(src).load())
    return prompts


def check_run(cfg: RolloutConfig) -> None:
    """The cheap checks: run id, engine, models, lake URI."""
    check_run_id(cfg.run_id)
    check_engine(cfg.engine, cfg.engine_options)
    for model in cfg.models:
        resolve_model(model)
    Lake(cfg.lake)  # a bad URI fails here


def preflight(cfg: RolloutConfig) -> list[Prompt]:
    """Every check a run depends on, sources included; returns the loaded prompts."""
    check_run(cfg)
    return load_sources(cfg.sources)


def load_and_shard(lake: Lake, run_id: str, sources: list[SourceConfig], shard_size: int) -> list[str]:
    """Commit the run's prompts and write content-addressed prompt shards to staging.

    Every source is read (and so checked) before the first write.
    """
    table = prompts_table(load_sources(sources))
    lake.commit("prompts", run_id, table)
    shards = []
    for start in range(0, table.num_rows, shard_size):
        part = table.slice(start, shard_size)
        name = ids.content_id(*part.column("prompt_id").to_pylist())
        rel = f"runs/{run_id}/prompts/{name}.parquet"
        if not lake.exists(f"_staging/{rel}"):
            lake.write_scratch(rel, part)
        shards.append(rel)
    return shards


def read_shard(lake: Lake, shard: str) -> list[Prompt]:
    return prompts_from_table(lake.read_scratch(shard))
