"""Hand-written labels with known values, for tests and smoke checks (pytest fixtures,
`bench/gpu_smoke.py`): what a labeler would commit, with values a test can predict."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tokenmill.schema import CRITICAL, TOKEN_REWARDS
from tokenmill.storage.lake import Lake
from tokenmill.labelers.base import provenance


def write_hand_labels(lake: Lake, run_id: str) -> None:
    """`critical` rows with weight = pos / 10 on the run's incorrect rollouts, and a `grpo`
    token reward of 0.5 on every token."""
    tokens = lake.read("tokens", run_id, columns=["rollout_id", "pos", "token_id"])
    rollouts = lake.read("rollouts", run_id, columns=["rollout_id", "verdict"])
    bad = {r["rollout_id"] for r in rollouts.to_pylist() if r["verdict"] == "incorrect"}
    t = tokens.filter(pa.compute.is_in(tokens.column("rollout_id"), value_set=pa.array(sorted(bad), pa.string())))
    n, pos = t.num_rows, t.column("pos").to_numpy()
    lake.commit("critical", run_id, pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "token_id": t.column("token_id"),
        "p_ce": pa.array(1 - pos / 10, pa.float32()), "weight": pa.array(pos / 10, pa.float32()),
        "rank": pa.array(np.ones(n), pa.int32()), "is_critical": pa.array(np.zeros(n, bool)),
        "pos_model": ["p"] * n, "neg_model": ["n"] * n, "beta": pa.array(np.ones(n), pa.float32()),
        **provenance(n, "critical", "1", {}, {}),
    }, schema=CRITICAL.schema))
    m = tokens.num_rows
    lake.commit("token_rewards", run_id, pa.table({
        "rollout_id": tokens.column("rollout_id"), "pos": tokens.column("pos"), "kind": ["grpo"] * m,
        "value": pa.array(np.full(m, 0.5), pa.float32()), "flag": pa.nulls(m, pa.bool_()),
        **provenance(m, "rewards", "1", {}, {}, "grpo"),
    }, schema=TOKEN_REWARDS.schema))
