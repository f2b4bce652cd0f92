"""Generate stage: prompts → rollouts + tokens tables (unverified), one shard at a time.

Plain functions; the Prefect wrappers in `flows/rollouts.py` only call them. Per-token
columns are built by concatenating each sequence's numpy arrays and one vectorised
decode of all token bytes (`TokenText.decode_many`), never by a loop over tokens.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from tokenmill import ids
from tokenmill.engines import Engine, Generation, SamplingParams, get_engine
from tokenmill.engines.base import NON_FINITE_FIX, first_non_finite
from tokenmill.errors import EngineError
from tokenmill.models.chat import RAW, PromptFormat
from tokenmill.models.tokenizer import TokenText
from tokenmill.schema import ROLLOUTS, TOKENS
from tokenmill.sources.base import Prompt
from tokenmill.storage.lake import Lake
from tokenmill.tasks.prompts import check_prompt_lengths, describe, render_prompts

_ENGINES: dict[tuple, Engine] = {}
_ENGINE_LOCK = threading.Lock()


def cached_engine(kind: str, model: str, **options) -> Engine:
    """One engine per (kind, model, options) per process: loading dominates small shards."""
    key = (kind, model, tuple(sorted(options.items())))
    with _ENGINE_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = get_engine(kind, model, **options)
        return _ENGINES[key]


_TEXT: dict[int, tuple[object, TokenText]] = {}


def token_text(engine: Engine) -> TokenText:
    """The byte table of the engine's tokenizer, built once per tokenizer."""
    tok = engine.tokenizer
    if id(tok) not in _TEXT:
        # the entry keeps the tokenizer alive, so its id() cannot be reused by another object
        _TEXT[id(tok)] = (tok, TokenText(tok))
    return _TEXT[id(tok)][1]


def list_array(values: np.ndarray, lengths, value_type: pa.DataType) -> pa.Array:
    """A list<value_type> column from flat values and per-row lengths."""
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.asarray(values), type=value_type))


def token_keys(rollout_ids, lengths) -> dict[str, pa.Array]:
    """The (rollout_id, pos) key columns of per-token rows: each id repeated over its tokens."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    return {
        "rollout_id": pa.array(np.repeat(np.array(list(rollout_ids), dtype=object), lengths), pa.string()),
        "pos": pa.array(np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths), pa.int32()),
    }


def identity_extra(engine: Engine, fmt: PromptFormat | None) -> tuple[dict, dict | None]:
    """(the rollout id's extra parts, the prompt rendering recorded) for this engine and format:
    the engine where it is not hf (its samples differ at T > 0 for the same seed), the chat
    template / system prompt where the prompt was not the raw text."""
    rendering = (fmt or RAW).identity(engine.tokenizer)
    extra: dict = {}
    if engine.name != "hf":
        extra["engine"] = engine.name
    if rendering:
        extra["prompt_format"] = rendering
    return extra, rendering


def rollout_tables(prompts: list[Prompt], gens: list[Generation], engine: Engine, params: SamplingParams,
                   fmt: PromptFormat | None = None, model_id: str | None = None) -> tuple[pa.Table, pa.Table]:
    """(rollouts, tokens) tables for `gens`; verdict columns left null. `model_id` names the
    model in the lake where it differs from what the engine loaded (a lake artifact).

    A NaN/inf logprob (a broken model, or one overflowing in half precision) is an
    EngineError naming the model and the first such rollout: never a NaN in the lake."""
    model_id = model_id or engine.model_id
    sampling = {k: v for k, v in params.as_dict().items() if k != "seed"}
    extra, rendering = identity_extra(engine, fmt)
    pids = [prompts[g.prompt_index].prompt_id for g in gens]
    rids = [ids.rollout_id(pid, model_id, sampling, params.seed, g.sample_index, extra) for pid, g in zip(pids, gens)]
    lengths = np.array([len(g.token_ids) for g in gens], dtype=np.int64)
    logprob = _cat([g.logprobs for g in gens], np.float32)
    topk_lp = _cat([g.topk_logprobs.reshape(-1) for g in gens], np.float32)
    bad = first_non_finite(lengths, logprob, topk_lp)
    if bad:
        g = gens[bad[0]]
        raise EngineError(f"model {model_id!r} gave non-finite log-probabilities (NaN/inf) on {bad[2]} of "
                          f"{len(logprob)} generated tokens, first at token {bad[1]} of sample {g.sample_index}",
                          where=describe(prompts[g.prompt_index]), fix=NON_FINITE_FIX)
    texts, char_start, char_end = token_text(engine).decode_many([g.token_ids for g in gens])
    n = len(gens)
    now = datetime.now(timezone.utc)
    rollouts = pa.table(
        {
            "rollout_id": rids,
            "prompt_id": pids,
            "sample_index": pa.array([g.sample_index for g in gens], pa.int32()),
            "source": [prompts[g.prompt_index].source for g in gens],
            "world": [prompts[g.prompt_index].world for g in gens],
            "model": [model_id] * n,
            "engine": [engine.name] * n,
            "prompt_token_ids": [g.prompt_token_ids for g in gens],
            "completion_token_ids": list_array(_cat([g.token_ids for g in gens], np.int32), lengths, pa.int32()),
            "completion": texts,
            "num_tokens": pa.array(lengths, pa.int32()),
            "finish_reason": [g.finish_reason for g in gens],
            "temperature": pa.array([params.temperature] * n, pa.float32()),
            "top_p": pa.array([params.top_p] * n, pa.float32()),
            "max_tokens": pa.array([params.max_tokens] * n, pa.int32()),
            "seed": pa.array([params.seed] * n, pa.int64()),
            "sampling": [ids.canonical_json(params.as_dict())] * n,
            "logprobs_kind": [engine.logprobs_kind] * n,
            "prompt_format": [ids.canonical_json(rendering) if rendering else None] * n,
            "reward": pa.nulls(n, pa.float32()),
            "verdict": pa.nulls(n, pa.string()),
            "verifier": pa.nulls(n, pa.string()),
            "verify_detail": pa.nulls(n, pa.string()),
            "created_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=ROLLOUTS.schema,
    )
    total = int(lengths.sum())
    k = gens[0].topk_ids.shape[1] if gens else 0
    entropy = None if any(g.entropy is None for g in gens) else _cat([g.entropy for g in gens], np.float32)
    tokens = pa.table(
        {
            **token_keys(rids, lengths),
            "token_id": pa.array(_cat([g.token_ids for g in gens], np.int32), pa.int32()),
            "logprob": pa.array(logprob, pa.float32()),
            "entropy": pa.array(entropy, pa.float32()) if entropy is not None else pa.nulls(total, pa.float32()),
            "topk_ids": list_array(_cat([g.topk_ids.reshape(-1) for g in gens], np.int32), np.full(total, k), pa.int32()),
            "topk_logprobs": list_array(topk_lp, np.full(total, k), pa.float32()),
            "char_start": pa.array(char_start, pa.int32()),
            "char_end": pa.array(char_end, pa.int32()),
        },
        schema=TOKENS.schema,
    )
    return rollouts, tokens


def _cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def generate(prompts: list[Prompt], engine: Engine, params: SamplingParams, fmt: PromptFormat | None = None,
             model_id: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Sample `params.n` completions per prompt: (rollouts, tokens), unverified.

    Prompts are rendered for the engine's tokenizer under `fmt` (chat template, system
    prompt; None = raw text) once, here: both engines get these ids. A prompt that leaves no
    room for a completion in the engine's context is refused, naming it; a completion is cut
    where prompt + completion fills the context (finish_reason "length").
    """
    enc = render_prompts(engine.tokenizer, prompts, fmt)
    check_prompt_lengths(prompts, [len(e) for e in enc], model_id or engine.model_id, getattr(engine, "max_context", None))
    gens = engine.generate(enc, params)  # the ids, not the text: tokenized once, here
    return rollout_tables(prompts, gens, engine, params, fmt, model_id)


def generated_dir(run_id: str, shard: str, engine: str, model: str, params: SamplingParams,
                  options: dict | None = None, fmt: PromptFormat | None = None) -> str:
    """Staging folder of one (shard, engine + options, model, sampling, rendering): named by their hash."""
    parts = [engine, ids.canonical_json(options or {}), model, ids.canonical_json(params.as_dict())]
    if fmt and fmt != PromptFormat():  # the default rendering keeps the folder names it had
        parts.append(ids.canonical_json(asdict(fmt)))
    shard_name = shard.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"runs/{run_id}/generated/{ids.content_id(*parts)}/{shard_name}"


def generate_shard(lake: Lake, run_id: str, shard: str, engine_kind: str, model: str, params: SamplingParams,
                   options: dict | None = None, fmt: PromptFormat | None = None) -> str:
    """Generate one prompt shard into staging; a shard already there is not redone. `model` may
    name a model trained into the lake (`_artifacts/models/<id>`): it loads from the artifact
    and the lake records it by that name."""
    from tokenmill.tasks.prompts import read_shard
    from tokenmill.storage.artifacts import model_source

    fmt = fmt or PromptFormat()
    out = generated_dir(run_id, shard, engine_kind, model, params, options, fmt)
    # rollouts.parquet is written last, but a shard whose tokens file has gone is not done
    if lake.exists(f"_staging/{out}/rollouts.parquet") and lake.exists(f"_staging/{out}/tokens.parquet"):
        return out
    engine = cached_engine(engine_kind, model_source(lake, model), **(options or {}))
    rollouts, tokens = generate(read_shard(lake, shard), engine, params, fmt, model_id=model)
    lake.write_scratch(f"{out}/tokens.parquet", tokens)
    lake.write_scratch(f"{out}/rollouts.parquet", rollouts)  # written last: marks the shard done
    return out
