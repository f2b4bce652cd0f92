"""Token-weighted datasets: what curation writes and training reads.

A dataset lives in the lake under `_datasets/<dataset_id>/`: Parquet shards and a
`manifest.json` (recipe, parameters, source run ids, the models whose rollouts its token
ids come from, row and token counts, content hash), copied in with the `DONE` marker last,
so a half-written dataset is never read. The id hashes recipe, parameters, runs and
content: curating the same data again writes nothing. Token ids mean something only under
the tokenizer that wrote them: training checks its base model against `models`.

sequences  input_ids (list<int32>) = prompt ⊕ completion, loss_mask (list<int8>: 1 on
           completion tokens), weights (list<float32>: 0 on the prompt, the recipe's
           weight on each completion token), optional targets (−100 on the prompt),
           rollout_id and run_id back to the lake, prompt / completion text
pairs      chosen_ / rejected_ input_ids, loss_mask, weights; chosen_ / rejected_rollout_id;
           chosen_ / rejected_token_rewards (the `dpo` token rewards, 0 on the prompt; null
           where a side is unlabelled: TGDPO's guidance); and TRL's text columns `prompt`,
           `chosen`, `rejected`

Loaders: `hf_dataset` (`datasets.load_dataset("parquet", …)`) and `PackedDataset`, a torch
IterableDataset that packs sequences into fixed-length blocks with per-example position
ids and segment ids; the first token of every example has loss weight 0, so no token is
ever trained to follow another example's last token.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from tokenmill import ids
from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake

DATASET_DIR = "_datasets"
ROWS_PER_SHARD = 50_000
ROLLOUT_ID_COLUMNS = ("rollout_id", "chosen_rollout_id", "rejected_rollout_id")

SEQUENCES_SQL = """
SELECT list_concat(prompt_token_ids, completion_token_ids)::INT[] AS input_ids,
       list_concat(list_transform(prompt_token_ids, lambda x: 0), list_transform(completion_token_ids, lambda x: 1))::TINYINT[] AS loss_mask,
       list_concat(list_transform(prompt_token_ids, lambda x: 0.0), weights)::FLOAT[] AS weights,
       {targets} * EXCLUDE (prompt_token_ids, completion_token_ids, weights{exclude_targets})
FROM t
"""
PAIRS_SQL = """
SELECT list_concat(prompt_token_ids, chosen_token_ids)::INT[] AS chosen_input_ids,
       list_concat(list_transform(prompt_token_ids, lambda x: 0), list_transform(chosen_token_ids, lambda x: 1))::TINYINT[] AS chosen_loss_mask,
       list_concat(list_transform(prompt_token_ids, lambda x: 0.0), chosen_weights)::FLOAT[] AS chosen_weights,
       list_concat(prompt_token_ids, rejected_token_ids)::INT[] AS rejected_input_ids,
       list_concat(list_transform(prompt_token_ids, lambda x: 0), list_transform(rejected_token_ids, lambda x: 1))::TINYINT[] AS rejected_loss_mask,
       list_concat(list_transform(prompt_token_ids, lambda x: 0.0), rejected_weights)::FLOAT[] AS rejected_weights,
       {rewards}chosen_rollout_id, rejected_rollout_id, run_id, prompt, chosen_text AS chosen, rejected_text AS rejected
FROM t
"""
PAIR_REWARDS_SQL = """
CASE WHEN chosen_rewards IS NULL OR rejected_rewards IS NULL THEN NULL
     ELSE list_concat(list_transform(prompt_token_ids, lambda x: 0.0), chosen_rewards) END::FLOAT[] AS chosen_token_rewards,
CASE WHEN chosen_rewards IS NULL OR rejected_rewards IS NULL THEN NULL
     ELSE list_concat(list_transform(prompt_token_ids, lambda x: 0.0), rejected_rewards) END::FLOAT[] AS rejected_token_rewards,
"""


def _check_weights(t: pa.Table, kind: str) -> None:
    """Every weights list has one value per completion token: else one error naming the row."""
    pairs = [("completion_token_ids", "weights", False)] if kind == "sequences" else \
        [("chosen_token_ids", "chosen_weights", False), ("rejected_token_ids", "rejected_weights", False)]
    pairs += [(toks, w, True) for toks, w in [("chosen_token_ids", "chosen_rewards"), ("rejected_token_ids", "rejected_rewards")]
              if w in t.column_names]  # token rewards may be absent (null), never the wrong length
    con = duckdb.connect()
    con.register("t", t)

    def first(where: str):
        """(the first row where `where` holds, its name) or None."""
        bad = con.sql(f"SELECT row_number() OVER () AS i, * FROM t WHERE {where} LIMIT 1").to_arrow_table()
        if not bad.num_rows:
            return None
        row = bad.to_pylist()[0]
        return row, row.get("rollout_id") or row.get("rejected_rollout_id") or f"row {row['i']}"

    for toks, w, nullable in pairs:
        if found := first(f"len({toks}) != coalesce(len({w}), {f'len({toks})' if nullable else '-1'})"):
            row, key = found
            raise TokenmillError(f"dataset: {key}: {w} has {len(row[w] or [])} values for {len(row[toks])} tokens",
                                 fix="the recipe must give one weight per completion token (missing labels? "
                                     "coalesce the weight expression)")
    for w in [w for _, w, nullable in pairs if not nullable]:  # a null weight would train as NaN or be dropped
        if found := first(f"list_position({w}, NULL) IS NOT NULL"):
            row, key = found
            raise TokenmillError(f"dataset: {key}: {w} is null at token {row[w].index(None)}",
                                 fix="the weight expression gives null where a token has no label: label the run "
                                     "with the family it reads, or coalesce the expression")


def build(kind: str, rows: pa.Table) -> pa.Table:
    """The dataset table of a recipe's rows."""
    _check_weights(rows, kind)
    con = duckdb.connect()
    con.register("t", rows)
    if kind == "pairs":
        rewards = PAIR_REWARDS_SQL if "chosen_rewards" in rows.column_names else ""
        return con.sql(PAIRS_SQL.format(rewards=rewards)).to_arrow_table()
    has_t = "targets" in rows.column_names
    sql = SEQUENCES_SQL.format(
        targets="list_concat(list_transform(prompt_token_ids, lambda x: -100.0), targets)::FLOAT[] AS targets," if has_t else "",
        exclude_targets=", targets" if has_t else "")
    return con.sql(sql).to_arrow_table()


def content_hash(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return ids.content_id(sink.getvalue().to_pybytes().hex())


def write(lake: Lake, table: pa.Table, *, recipe: str, kind: str, params: dict, runs: list[str]) -> dict:
    """Store `table` as a dataset; returns its manifest (an existing identical one is reused)."""
    chash = content_hash(table)
    dataset_id = ids.content_id("dataset", recipe, ids.canonical_json(params), *runs, chash)
    rel = f"{DATASET_DIR}/{dataset_id}"
    if lake.has_dir(rel):
        return read_manifest(lake, dataset_id)
    id_col = "input_ids" if kind == "sequences" else "chosen_input_ids"
    tokens = int(sum(len(x) for x in table.column(id_col).to_pylist())) if table.num_rows else 0
    manifest = {
        "dataset_id": dataset_id, "path": rel, "recipe": recipe, "kind": kind, "params": params, "runs": runs,
        "models": source_models(lake, table, runs),
        "rows": table.num_rows, "tokens": tokens, "content_hash": chash, "columns": table.column_names,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shards": [f"part-{i:05d}.parquet" for i in range(max(1, -(-table.num_rows // ROWS_PER_SHARD)))],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(manifest["shards"]):
            pq.write_table(table.slice(i * ROWS_PER_SHARD, ROWS_PER_SHARD), os.path.join(tmp, name))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        lake.put_dir(tmp, rel)
    return manifest


def source_models(lake: Lake, table: pa.Table, runs: list[str]) -> list[str]:
    """The models that generated a dataset's rows (their tokenizer wrote its token ids): of
    the rows' rollouts where the rows name them, else every model of the source runs (a
    user's recipe may drop the rollout ids)."""
    cols = [c for c in ROLLOUT_ID_COLUMNS if c in table.column_names]
    flt = None
    if cols:
        wanted = pc.unique(pa.chunked_array([table.column(c).cast(pa.string()) for c in cols]).combine_chunks())
        flt = pc.field("rollout_id").isin(wanted.drop_null())
    models: set[str] = set()
    for run in runs:
        if lake.files("rollouts", run):
            models |= set(lake.read("rollouts", run, columns=["model"], filter=flt).column("model").to_pylist())
    return sorted(models)


def local_path(lake: Lake, dataset_id: str) -> Path:
    rel = f"{DATASET_DIR}/{dataset_id}"
    if not lake.has_dir(rel):
        raise TokenmillError(f"no dataset {dataset_id!r} in the lake", fix="run `tokenmill curate` first")
    return Path(lake.local_dir(rel, cache=tempfile.gettempdir() + "/tokenmill-datasets"))


def read_manifest(lake: Lake, dataset_id: str) -> dict:
    return json.loads((local_path(lake, dataset_id) / "manifest.json").read_text())


def hf_dataset(path: str | Path):
    """The dataset as a 🤗 `datasets.Dataset` (its Parquet loader, no copy of the logic)."""
    from datasets import load_dataset

    return load_dataset("parquet", data_files=sorted(str(p) for p in Path(path).glob("part-*.parquet")), split="train")


class PackedDataset(torch.utils.data.IterableDataset):
    """Sequences packed into blocks of `seq_len` tokens (torch IterableDataset).

    Each item: input_ids [L], weights [L] (loss weight of predicting token t; 0 on prompts,
    padding and the first token of every example), position_ids [L] (restart per
    example), segment_ids [L] (example index in the block, −1 on padding). Examples longer
    than `seq_len` are cut to it. `block_causal_mask` turns segment ids into the attention
    mask that keeps examples apart.
    """

    def __init__(self, path: str | Path, seq_len: int = 512, shuffle: bool = True, seed: int = 0, pad_id: int = 0):
        self.files = sorted(Path(path).glob("part-*.parquet"))
        self.seq_len, self.shuffle, self.seed, self.pad_id = seq_len, shuffle, seed, pad_id

    def examples(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for f in self.files:
            t = pq.read_table(f, columns=["input_ids", "weights"])
            ids_, ws = t.column("input_ids").to_pylist(), t.column("weights").to_pylist()
            order = list(range(len(ids_)))
            if self.shuffle:
                random.Random(self.seed).shuffle(order)
            for i in order:
                yield np.asarray(ids_[i][: self.seq_len], np.int64), np.asarray(ws[i][: self.seq_len], np.float32)

    def __iter__(self):
        L = self.seq_len
        buf_ids, buf_w, buf_pos, buf_seg, used, seg = [], [], [], [], 0, 0

        def flush():
            pad = L - used
            out = {"input_ids": np.concatenate(buf_ids + [np.full(pad, self.pad_id, np.int64)]),
                   "weights": np.concatenate(buf_w + [np.zeros(pad, np.float32)]),
                   "position_ids": np.concatenate(buf_pos + [np.zeros(pad, np.int64)]),
                   "segment_ids": np.concatenate(buf_seg + [np.full(pad, -1, np.int64)])}
            return {k: torch.from_numpy(v) for k, v in out.items()}

        for ids_, w in self.examples():
            if used + len(ids_) > L and used:
                yield flush()
                buf_ids, buf_w, buf_pos, buf_seg, used, seg = [], [], [], [], 0, 0
            w = w.copy()
            w[0] = 0.0  # the first token would be "predicted" from the previous example
            buf_ids.append(ids_), buf_w.append(w), buf_pos.append(np.arange(len(ids_)))
            buf_seg.append(np.full(len(ids_), seg))
            used += len(ids_)
            seg += 1
        if used:
            yield flush()


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool attention mask: causal within an example, nothing across examples."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.tril(torch.ones(segment_ids.shape[1], segment_ids.shape[1], dtype=torch.bool))
    return (same & causal & (segment_ids[:, :, None] >= 0))[:, None]
