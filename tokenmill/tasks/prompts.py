"""Prompt stage: check a run's inputs, load its sources, commit `prompts`, cut shards.

`check_run` (run id, engine and its options, models, lake URI) and the source loading in
`load_and_shard` both happen before the first write, so a bad run leaves the lake unchanged; `preflight`
does all of it up front for the CLI, before Prefect starts, and also refuses a prompt that
does not fit a model's context (`check_prompt_lengths`; tokenizers only, no weights).
"""

from __future__ import annotations

from tokenmill import ids
from tokenmill.tasks.rollout_config import RolloutConfig, SourceConfig
from tokenmill.engines import check_engine, context_limit, load_tokenizer
from tokenmill.errors import EngineError
from tokenmill.models.chat import RAW, PromptFormat
from tokenmill.models.registry import resolve_model
from tokenmill.sources import Prompt, build_source, prompts_from_table, prompts_table
from tokenmill.storage.lake import Lake, check_run_id
from tokenmill.storage.artifacts import model_source


def load_sources(sources: list[SourceConfig]) -> list[Prompt]:
    prompts: list[Prompt] = []
    for src in sources:
        prompts.extend(build_source(src).load())
    return prompts


def check_run(cfg: RolloutConfig) -> None:
    """The cheap checks: run id, engine, models (a lake artifact must be finished), lake URI."""
    check_run_id(cfg.run_id)
    check_engine(cfg.engine, cfg.engine_options)
    lake = Lake(cfg.lake)  # a bad URI fails here
    for model in cfg.models:
        resolve_model(model_source(lake, model))
    prompt_format(cfg)


def prompt_format(cfg: RolloutConfig) -> PromptFormat:
    return PromptFormat(chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)


def preflight(cfg: RolloutConfig) -> list[Prompt]:
    """Every check a run depends on, sources included; returns the loaded prompts."""
    check_run(cfg)
    prompts = load_sources(cfg.sources)
    check_context(prompts, model_paths(Lake(cfg.lake), cfg.models), cfg.engine_options, prompt_format(cfg))
    return prompts


def model_paths(lake: Lake, models: list[str]) -> list[str]:
    """What loads each model (a lake artifact loads from its local copy)."""
    return [model_source(lake, m) for m in models]


def render_prompts(tokenizer, prompts: list[Prompt], fmt: PromptFormat | None) -> list[list[int]]:
    """Token ids of prompts as a model with `tokenizer` is given them under `fmt` (None: raw
    text), each world's answer-format instruction included where a chat template applies."""
    from tokenmill.sources.worlds import WORLDS

    instructions = [getattr(WORLDS.get(p.world), "chat_instruction", None) if p.world else None for p in prompts]
    return (fmt or RAW).render(tokenizer, [p.prompt for p in prompts], instructions)


def describe(prompt: Prompt) -> str:
    """Where a prompt came from, for errors: its source and record (a file's line or row),
    else its id."""
    record = prompt.meta.get("record") if prompt.meta else None
    if record is not None:
        return f"source {prompt.source!r}, record {record} (prompt {prompt.prompt_id})"
    return f"source {prompt.source!r}, prompt {prompt.prompt_id}"


def check_prompt_lengths(prompts: list[Prompt], lengths, model: str, limit: int | None) -> None:
    """Refuse prompts of `lengths` tokens that leave no room for a completion in `limit`."""
    import numpy as np

    if not limit or not len(prompts):
        return
    over = np.flatnonzero(np.asarray(lengths) >= limit)
    if len(over):
        i = int(over[0])
        more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
        raise EngineError(f"prompt has {int(lengths[i])} tokens, leaving no room for a completion in the context of "
                          f"{model} ({limit} tokens){more}", where=describe(prompts[i]),
                          fix="shorten or drop the prompt (e.g. filter the source), or use a model with a longer context")


def check_context(prompts: list[Prompt], models: list[str], engine_options: dict | None = None,
                  fmt: PromptFormat | None = None) -> None:
    """Every prompt, as rendered for each model, fits its context with room for a completion
    (prompt + completion beyond it is cut at the context, finish_reason "length")."""
    seen = set()
    for model in models:
        tok = load_tokenizer(model)
        limit = context_limit(model, engine_options)
        if not limit or (id(tok), limit) in seen:
            continue
        seen.add((id(tok), limit))
        lengths = [len(ids_) for ids_ in render_prompts(tok, prompts, fmt)] if prompts else []
        check_prompt_lengths(prompts, lengths, model, limit)


def load_and_shard(lake: Lake, run_id: str, sources: list[SourceConfig], shard_size: int,
                   models: list[str] | None = None, engine_options: dict | None = None,
                   fmt: PromptFormat | None = None) -> list[str]:
    """Commit the run's prompts and write content-addressed prompt shards to staging.

    Every source is read (and so checked) before the first write; given the run's `models`,
    so is every prompt's length against their contexts (`check_context`).
    """
    loaded = load_sources(sources)
    if models:
        check_context(loaded, model_paths(lake, models), engine_options, fmt)
    table = prompts_table(loaded)
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


def run_prompts(lake: Lake, run_id: str, prompt_ids=None) -> dict[str, Prompt]:
    """The run's prompts by id; only `prompt_ids` where given. A labeler reads its shard's own:
    building every prompt of the run for each shard costs O(shards × prompts)."""
    import pyarrow.compute as pc

    flt = None if prompt_ids is None else pc.field("prompt_id").isin(pc.unique(prompt_ids))
    table = lake.read("prompts", run_id, filter=flt)
    return dict(zip(table.column("prompt_id").to_pylist(), prompts_from_table(table)))


def read_shard(lake: Lake, shard: str) -> list[Prompt]:
    return prompts_from_table(lake.read_scratch(shard))
