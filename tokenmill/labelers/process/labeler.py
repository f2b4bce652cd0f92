"""The process labeler: each rollout's first wrong token, from its world's step checker.

Per rollout with a world that has `first_error` (others are skipped): e = the character
where the first wrong step starts (−1: none). Decoding the completion's tokens gives each
token's character span [s_t, e_t) (`TokenText`, the same decode the generate stage records).

  first_error_t  = s_t ≤ e < e_t      (the token holding the error's first character)
  before_error_t = e_t ≤ e, or e = −1 (every step up to the token is right)

The checker reads the decoded token text, so the character offsets are those of the
tokens themselves.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard
from tokenmill.labelers.process.config import ProcessConfig
from tokenmill.labelers.process.table import PROCESS_LABELS
from tokenmill.storage.lake import Lake
from tokenmill.tasks.prompts import run_prompts


def token_flags(char_start: np.ndarray, char_end: np.ndarray, lengths: np.ndarray,
                error_char: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first_error, before_error) per flat token of rollouts of `lengths` tokens, whose
    first errors start at `error_char` (−1: none) — the module docstring's rule."""
    e = np.repeat(np.asarray(error_char, np.int64), lengths)
    has = e >= 0
    first = has & (char_start <= e) & (e < char_end)
    before = ~has | (char_end <= e)
    return first, before


class ProcessLabeler(Labeler):
    name = "process"
    version = "1"

    def __init__(self, config: ProcessConfig | None = None):
        self.cfg = config or ProcessConfig()

    def params(self) -> dict:
        return self.cfg.model_dump()

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        cid = config_id(self.name, self.version, {}, self.params())
        if is_done(lake, run_id, cid, shard):
            return {"process_labels": 0}
        rollouts = read_rollouts_shard(lake, shard, ["rollout_id", "prompt_id", "model", "world", "completion_token_ids",
                                                     "verdict"])
        rollouts = rollouts.filter(pc.is_in(rollouts.column("verdict"), pa.array(self.cfg.verdicts)))
        written = lake.commit("process_labels", run_id, self.label(lake, run_id, rollouts)).rows_written
        mark_done(lake, run_id, cid, shard)
        return {"process_labels": written}

    def label(self, lake: Lake, run_id: str, rollouts: pa.Table) -> pa.Table:
        from tokenmill.engines import load_tokenizer
        from tokenmill.models.tokenizer import TokenText
        from tokenmill.sources.worlds import WORLDS, shared_world

        checked = [w for w, cls in WORLDS.items() if getattr(cls, "first_error", None) is not None]
        rollouts = rollouts.filter(pc.is_in(rollouts.column("world"), pa.array(checked, pa.string())))
        if rollouts.num_rows == 0:
            return PROCESS_LABELS.schema.empty_table()
        prompts = run_prompts(lake, run_id, rollouts.column("prompt_id"))
        parts = []
        for model in pc.unique(rollouts.column("model")).to_pylist():
            rows = rollouts.filter(pc.field("model") == model)
            seqs = [np.asarray(c, np.int64) for c in rows.column("completion_token_ids").to_pylist()]
            texts, starts, ends = TokenText(load_tokenizer(model)).decode_many(seqs)
            # one checker call per rollout (a regex over its text), never per token
            found = [shared_world(w).first_error(prompts[pid], text) for w, pid, text in
                     zip(rows.column("world").to_pylist(), rows.column("prompt_id").to_pylist(), texts)]
            error_char = np.array([f[0] for f in found], np.int64)
            step = np.array([f[1] for f in found], np.int64)
            lengths = np.array([len(s) for s in seqs], np.int64)
            first, before = token_flags(starts, ends, lengths, error_char)
            n = int(lengths.sum())
            parts.append(pa.table({
                "rollout_id": pa.array(np.repeat(rows.column("rollout_id").to_numpy(zero_copy_only=False), lengths),
                                       pa.string()),
                "pos": pa.array(np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths), pa.int32()),
                "first_error": pa.array(first, pa.bool_()),
                "before_error": pa.array(before, pa.bool_()),
                "step": pa.array(np.repeat(step, lengths), pa.int32()),
                **provenance(n, self.name, self.version, {}, self.params()),
            }, schema=PROCESS_LABELS.schema))
        return pa.concat_tables(parts)
