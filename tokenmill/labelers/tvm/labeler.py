"""The TVM labeler: per-token value targets of every verified rollout (formula: targets.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard
from tokenmill.labelers.tvm.config import TvmConfig
from tokenmill.labelers.tvm.table import TVM_TARGETS
from tokenmill.labelers.tvm.targets import tvm_targets
from tokenmill.storage.lake import Lake

VERIFIED = ("correct", "incorrect")


class TvmLabeler(Labeler):
    name = "tvm"
    version = "1"

    def __init__(self, config: TvmConfig | None = None):
        self.cfg = config or TvmConfig()

    def params(self) -> dict:
        return self.cfg.model_dump()

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        cid = config_id(self.name, self.version, {}, self.params())
        if is_done(lake, run_id, cid, shard):
            return {"tvm_targets": 0}
        cols = ["rollout_id", "prompt_id", "model", "completion_token_ids", "verdict", "reward"]
        rollouts = read_rollouts_shard(lake, shard, cols)
        # a shard holds whole prompt groups; unverified rollouts have no outcome to average
        rollouts = rollouts.filter(pc.is_in(rollouts.column("verdict"), pa.array(VERIFIED)))
        written = lake.commit("tvm_targets", run_id, self.label(rollouts)).rows_written
        mark_done(lake, run_id, cid, shard)
        return {"tvm_targets": written}

    def label(self, rollouts: pa.Table) -> pa.Table:
        if rollouts.num_rows == 0:
            return TVM_TARGETS.schema.empty_table()
        ids = rollouts.column("completion_token_ids")
        lengths = pc.list_value_length(ids).fill_null(0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(ids).to_numpy().astype(np.int64)
        if self.cfg.target == "correct":
            outcome = (rollouts.column("verdict").to_numpy(zero_copy_only=False) == "correct").astype(np.float64)
        else:
            outcome = rollouts.column("reward").fill_null(0.0).to_numpy().astype(np.float64)
        groups = pc.binary_join_element_wise(rollouts.column("prompt_id"), rollouts.column("model"), "\x00")
        value, paths = tvm_targets(flat, lengths, outcome, groups.to_numpy(zero_copy_only=False))
        n = len(flat)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pa.table({
            "rollout_id": pa.array(np.repeat(rollouts.column("rollout_id").to_numpy(zero_copy_only=False), lengths),
                                   pa.string()),
            "pos": pa.array(np.arange(n) - starts, pa.int32()),
            "value": pa.array(value, pa.float32()),
            "paths": pa.array(paths, pa.int32()),
            **provenance(n, self.name, self.version, {}, self.params()),
        }, schema=TVM_TARGETS.schema)
