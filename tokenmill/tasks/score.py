"""Score stage: teacher-forced statistics of a run's rollouts under named models.

A *role* names a model for the labelers (`policy`, `ref`, `pos`, `neg`, `large`, …) and
maps to what is loaded: a bundled name, a path or a hub id. The role `policy` means
"each rollout's own model" (`rollouts.model`), so a run with several models is scored by
each under its own policy. Per token: raw logprob of the actual token, exact entropy,
top-1 id, top-k ids and logprobs → table `scores`, keyed by (rollout_id, pos, model=role).
Entropy is asked for where a labeler needs it (`entropy=True`: an engine that cannot give
it, vLLM, refuses) and otherwise kept where the engine gives it anyway (`entropy=None`:
hf yes, vLLM no — the column is then null).
Optionally the hidden state of one layer at each token → table `hidden_states`, float16.

Batching is the engine's: sequences sorted by length and cut into buckets under a token
budget (no padding waste), the LM head only at completion positions. Columns are built
by concatenating per-sequence arrays; nothing loops over tokens in Python.

Shards are the run's committed `rollouts` files: each holds every sample of its prompts
for one model, so a shard is also a complete set of GRPO/TEMPO groups.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engines import Engine, load_tokenizer, tokenizer_difference
from tokenmill.engines.base import NON_FINITE_FIX, first_non_finite
from tokenmill.errors import EngineError, unreadable_file
from tokenmill.schema import HIDDEN_STATES, SCORES
from tokenmill.storage.lake import Lake
from tokenmill.tasks.generate import _cat, cached_engine, list_array, token_keys
from tokenmill.capabilities import ENTROPY
from tokenmill.storage.lake import read_rollouts_shard
from tokenmill.storage.artifacts import model_source  # noqa: F401 (callers import it from here too)

POLICY = "policy"  # the role of each rollout's own model
SCORE_COLUMNS = ["rollout_id", "model", "prompt_token_ids", "completion_token_ids"]


def engine_gives_entropy(engine_kind: str) -> bool:
    """Whether the engine's scoring gives exact entropy (its declared capabilities)."""
    from tokenmill.engines import capabilities

    return ENTROPY in capabilities(engine_kind)


def tokens_have_entropy(lake: Lake, run_id: str) -> bool:
    """Whether every generated token of the run has its exact entropy in `tokens` (the hf
    engine gives it while generating, vLLM does not). Read from the files' footers (null
    counts), a file's column itself only where its footer has no statistics."""
    files = lake.files("tokens", run_id)
    for path in files:
        try:
            meta = pq.read_metadata(path, filesystem=lake.fs)
        except (pa.ArrowException, OSError) as e:
            raise unreadable_file(path, e, lake.uri) from None
        nulls = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = next((group.column(j).statistics for j in range(group.num_columns)
                          if group.column(j).path_in_schema == "entropy"), None)
            if stats is None or not stats.has_null_count:
                nulls = lake.read_part(path, columns=["entropy"]).column("entropy").null_count
                break
            nulls += stats.null_count
        if nulls:
            return False
    return bool(files)


def scores_table(rollout_ids: list[str], completions: list[np.ndarray], scored, role: str, model_id: str) -> pa.Table:
    """The `scores` rows of already-scored sequences."""
    lengths = np.array([len(c) for c in completions], dtype=np.int64)
    total = int(lengths.sum())
    k = scored[0].topk_ids.shape[1] if scored else 0
    has_entropy = all(s.entropy is not None for s in scored)
    top_ids = _cat([s.topk_ids.reshape(-1) for s in scored], np.int32)
    return pa.table(
        {
            **token_keys(rollout_ids, lengths),
            "model": pa.array([role] * total, pa.string()),
            "model_id": pa.array([model_id] * total, pa.string()),
            "token_id": pa.array(_cat(completions, np.int32), pa.int32()),
            "logprob": pa.array(_cat([s.logprobs for s in scored], np.float32), pa.float32()),
            "entropy": pa.array(_cat([s.entropy for s in scored], np.float32), pa.float32())
            if has_entropy else pa.nulls(total, pa.float32()),
            "top1_id": pa.array(top_ids.reshape(total, k)[:, 0] if k else np.full(total, -1), pa.int32()),
            "topk_ids": list_array(top_ids, np.full(total, k), pa.int32()),
            "topk_logprobs": list_array(_cat([s.topk_logprobs.reshape(-1) for s in scored], np.float32),
                                        np.full(total, k), pa.float32()),
        },
        schema=SCORES.schema,
    )


def hidden_table(scores: pa.Table, scored, layer: int) -> pa.Table:
    """`hidden_states` rows aligned with `scores` (same token order), stored as float16."""
    flat = np.concatenate([s.hidden for s in scored]).astype(np.float16) if scored else np.zeros((0, 0), np.float16)
    total, d = flat.shape
    return pa.table(
        {
            "rollout_id": scores.column("rollout_id"),
            "pos": scores.column("pos"),
            "model": scores.column("model"),
            "model_id": scores.column("model_id"),
            "layer": pa.array(np.full(total, layer), pa.int32()),
            "hidden": list_array(flat.reshape(-1), np.full(total, d), pa.float16()),
        },
        schema=HIDDEN_STATES.schema,
    )


def score(rollouts: pa.Table, engine: Engine, role: str, top_k: int = 5, hidden_layer: int | None = None,
          model_id: str | None = None, entropy: bool | None = None) -> tuple[pa.Table, pa.Table | None]:
    """Score every rollout's completion under `engine`: (scores, hidden_states or None).

    `entropy`: True asks for exact entropy (an engine that cannot give it refuses), False
    leaves it out, None keeps it where the engine gives it (hf; not vLLM): null otherwise.

    A rollout longer than the engine's context, or a NaN/inf logprob, is an EngineError
    naming the rollout, the role and the model: never a silent NaN in `scores`."""
    rids = rollouts.column("rollout_id").to_pylist()
    prompts = rollouts.column("prompt_token_ids").to_pylist()
    completions = [np.asarray(c, dtype=np.int32) for c in rollouts.column("completion_token_ids").to_pylist()]
    limit = getattr(engine, "max_context", None)
    if limit and rollouts.num_rows:
        totals = pc.add(pc.list_value_length(rollouts.column("prompt_token_ids")),
                        pc.list_value_length(rollouts.column("completion_token_ids"))).to_numpy()
        over = np.flatnonzero(totals > limit)
        if len(over):
            i = int(over[0])
            raise EngineError(f"rollout has {int(totals[i])} tokens (prompt + completion), more than the {limit} of "
                              f"{engine.model_id!r} (role {role!r})" + (f"; {len(over) - 1} more do too" if len(over) > 1 else ""),
                              where=f"rollout {rids[i]}",
                              fix="score with a model whose context holds the run's rollouts (the policy's, or longer)")
    if entropy is None:
        entropy = getattr(engine, "exact_entropy", True)
    scored = engine.score(prompts, completions, top_k=top_k, entropy=entropy, hidden_layer=hidden_layer)
    lengths = [len(c) for c in completions]
    bad = first_non_finite(lengths, _cat([s.logprobs for s in scored], np.float32),
                           _cat([s.topk_logprobs.reshape(-1) for s in scored], np.float32))
    if bad:
        raise EngineError(f"model {engine.model_id!r} (role {role!r}) gave non-finite log-probabilities (NaN/inf) on "
                          f"{bad[2]} of {sum(lengths)} tokens, first at token {bad[1]}",
                          where=f"rollout {rids[bad[0]]}", fix=NON_FINITE_FIX)
    table = scores_table(rids, completions, scored, role, model_id or engine.model_id)
    return table, hidden_table(table, scored, hidden_layer) if hidden_layer is not None else None


@lru_cache(maxsize=256)
def _tokenizer_problem(model: str, policy: str) -> str | None:
    return None if model == policy else tokenizer_difference(load_tokenizer(model), load_tokenizer(policy))


def check_scoring_tokenizer(role: str, model: str, policies: list[str]) -> None:
    """Scoring feeds a rollout's token ids to another model: refuse one whose tokenizer reads
    those ids as other text (its logprobs would be of tokens the policy never wrote)."""
    for policy in policies:
        problem = _tokenizer_problem(model, policy)
        if problem:
            raise EngineError(f"role {role!r}: {model} has a different tokenizer from {policy}, which generated the "
                              f"rollouts: {problem}",
                              fix=f"score with a model of {policy}'s family (same tokenizer), e.g. --model {role}={policy}")


def role_rows(role: str, model: str) -> pc.Expression:
    """The `scores` rows of `role` filled by `model` (each rollout's own model for the policy)."""
    expr = pc.field("model") == role
    return expr if model == POLICY else expr & (pc.field("model_id") == model)


def missing(lake: Lake, table: str, run_id: str, rollout_ids: pa.Array, role: str, layer: int | None = None,
            model: str = POLICY) -> pa.Array:
    """The rollout ids of `rollout_ids` that have no rows for `role` (filled by `model`) in
    `table` yet."""
    if not lake.files(table, run_id):
        return rollout_ids
    flt = role_rows(role, model) & pc.field("rollout_id").isin(rollout_ids)
    if layer is not None:
        flt = flt & (pc.field("layer") == layer)
    done = lake.read(table, run_id, columns=["rollout_id"], filter=flt).column("rollout_id")
    return pc.filter(rollout_ids, pc.invert(pc.is_in(rollout_ids, value_set=pc.unique(done))))


def score_shard(lake: Lake, run_id: str, shard: str, roles: dict[str, str], engine_kind: str = "hf",
                engine_options: dict | None = None, top_k: int = 5, hidden_layer: int | None = None,
                where: pc.Expression | None = None, entropy: bool | None = None) -> dict[str, int]:
    """Score one rollouts shard under each role, only what the lake does not have yet.

    `roles` maps role → model (`{"ref": "tiny-small", "policy": "policy"}`); `where`
    restricts the rollouts (e.g. only incorrect ones); `entropy` as in `score` (the label
    flow passes True only where a labeler needs it). Returns rows written per role.
    """
    rollouts = read_rollouts_shard(lake, shard, SCORE_COLUMNS + ["verdict"])
    if where is not None:
        rollouts = rollouts.filter(where)
    for role, model in roles.items():  # every role checked before anything is scored
        if model != POLICY:
            check_scoring_tokenizer(role, model_source(lake, model), pc.unique(rollouts.column("model")).to_pylist())
    written = {}
    for role, model in roles.items():
        todo = missing(lake, "scores", run_id, rollouts.column("rollout_id").combine_chunks(), role, model=model)
        if hidden_layer is not None:
            todo = pc.unique(pa.concat_arrays([todo, missing(lake, "hidden_states", run_id,
                                               rollouts.column("rollout_id").combine_chunks(), role, hidden_layer, model)]))
        part = rollouts.filter(pc.is_in(rollouts.column("rollout_id"), value_set=todo))
        written[role] = 0
        # the policy role scores each rollout under the model that generated it
        for name in (pc.unique(part.column("model")).to_pylist() if model == POLICY else [model]):
            rows = part.filter(pc.equal(part.column("model"), name)) if model == POLICY else part
            if rows.num_rows == 0:
                continue
            engine = cached_engine(engine_kind, model_source(lake, name), **(engine_options or {}))
            table, hidden = score(rows, engine, role, top_k, hidden_layer, model_id=None if model == POLICY else model,
                                  entropy=entropy)
            if hidden is not None:
                lake.commit("hidden_states", run_id, hidden)
            written[role] += lake.commit("scores", run_id, table).rows_written
    return written
