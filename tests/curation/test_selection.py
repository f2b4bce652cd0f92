"""Prompt and sample selection before token weighting: RLPR's EMA std filter and D³S's
max-variance sample selection, on cases worked by hand and on a lake."""

import itertools

import numpy as np
import pyarrow as pa
import pytest

from tokenmill import datasets as D
from tokenmill.curation.curate import run_recipe
from tokenmill.curation.selection import ema_std_keep, group_std, max_variance_subsets
from tokenmill.errors import TokenmillError
from tokenmill.labelers.base import config_id, provenance
from tokenmill.schema import TOKEN_REWARDS


def test_group_std_is_torch_std_and_one_for_a_group_of_one():
    import torch

    values = np.array([1.0, 0.0, 0.0, 0.5, 0.5, 7.0])
    groups = np.array([0, 0, 0, 1, 1, 2])
    got = group_std(values, groups)
    assert np.allclose(got[:2], [torch.tensor([1.0, 0, 0]).std().item(), 0.0])  # √(1/3) = 0.5774
    assert got[2] == 1.0  # RLPR's get_reward_mean_and_std gives a single response std 1


def test_ema_threshold_follows_the_authors_recurrence():
    # batches of 2 groups: means 0.3, 0.1, 0.5 → EMA 0.3, 0.9·0.3 + 0.1·0.1 = 0.28, 0.9·0.28 + 0.1·0.5 = 0.302
    stds = np.array([0.2, 0.4, 0.0, 0.2, 0.5, 0.5])
    keep, thr = ema_std_keep(stds, beta=1.0, ratio=0.9, batch=2)
    assert np.allclose(thr, [0.3, 0.3, 0.28, 0.28, 0.302, 0.302])
    assert keep.tolist() == [False, True, False, False, True, True]
    keep, thr = ema_std_keep(stds, beta=0.5, ratio=0.9, batch=2)
    assert keep.tolist() == [True, True, False, True, True, True]  # 0.2 ≥ 0.14


def test_max_variance_subset_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, m = rng.integers(3, 9), rng.integers(1, 5)
        v = rng.integers(0, 4, n).astype(float) / 2  # ties on purpose
        keep = max_variance_subsets(v, np.zeros(n, int), int(m))
        assert keep.sum() == min(n, m)
        best = max(np.var(v[list(c)]) for c in itertools.combinations(range(n), min(n, m)))
        assert np.isclose(np.var(v[keep]), best)


def test_max_variance_keeps_both_extremes_per_group():
    # group 0: 0, 0.1, 0.5, 0.9, 1 → best pair {0, 1}; group 1 has 2 rollouts, both kept
    v = np.array([0.5, 0.0, 1.0, 0.1, 0.9, 3.0, 4.0])
    g = np.array([0, 0, 0, 0, 0, 1, 1])
    assert max_variance_subsets(v, g, 2).tolist() == [False, True, True, False, False, True, True]


def _sequence_rewards(lake, run, kind, value_of):
    """Hand-written sequence-level rewards of `kind`: every token of a rollout gets value_of(rollout index)."""
    rollouts = lake.read("rollouts", run, columns=["rollout_id"]).column("rollout_id").to_pylist()
    index = {r: i for i, r in enumerate(rollouts)}
    t = lake.read("tokens", run, columns=["rollout_id", "pos"])
    n = t.num_rows
    values = [value_of(index[r]) for r in t.column("rollout_id").to_pylist()]
    lake.commit("token_rewards", run, pa.table({
        "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "kind": [kind] * n,
        "value": pa.array(values, pa.float32()), "flag": pa.nulls(n, pa.bool_()),
        **provenance(n, "rewards", "2", {"k": kind}, {}, kind)}, schema=TOKEN_REWARDS.schema))
    return config_id("rewards", "2", {"k": kind}, {}, kind)


def test_weighted_sft_keeps_only_prompts_that_pass_the_std_filter(labelled):
    rollouts = labelled.read("rollouts", "r1", columns=["rollout_id", "prompt_id", "model"]).to_pylist()
    prompts = sorted({r["prompt_id"] for r in rollouts})
    flat = set(prompts[::2])  # every other prompt: all its rollouts get one reward (std 0)
    _sequence_rewards(labelled, "r1", "rlpr",
                      lambda i: 0.5 if rollouts[i]["prompt_id"] in flat else float(i % 2))
    _, _, everything = run_recipe(labelled, "weighted-sft", ["r1"], {"where": "true"})
    _, params, rows = run_recipe(labelled, "weighted-sft", ["r1"], {"where": "true", "std_filter_beta": 0.5})
    ids = set(rows.column("rollout_id").to_pylist())
    kept = {r["prompt_id"] for r in rollouts if r["rollout_id"] in ids}
    assert kept and not kept & flat and rows.num_rows < everything.num_rows
    assert params["std_filter_beta"] == 0.5 and "select_m" not in params  # optional: only what was given
    D.build("sequences", rows)


def test_weighted_sft_selects_m_rollouts_per_prompt_by_advantage_variance(labelled):
    rollouts = labelled.read("rollouts", "r1", columns=["rollout_id", "prompt_id", "model"]).to_pylist()
    cid = _sequence_rewards(labelled, "r1", "tempo", lambda i: float(i))
    _, _, rows = run_recipe(labelled, "weighted-sft", ["r1"], {"where": "true", "select_m": 2, "select_by": "tempo",
                                                               "configs": cid})
    by_prompt = {}
    index = {r["rollout_id"]: i for i, r in enumerate(rollouts)}
    for rid in rows.column("rollout_id").to_pylist():
        by_prompt.setdefault(rollouts[index[rid]]["prompt_id"], []).append(index[rid])
    for pid, kept in by_prompt.items():
        group = [i for i, r in enumerate(rollouts) if r["prompt_id"] == pid]
        assert len(kept) == min(2, len(group))
        if len(group) > 2:  # values are the indices: the max-variance pair is the group's first and last
            assert sorted(kept) == [min(group), max(group)]


def test_selection_on_a_kind_the_run_lacks_says_how_to_label_it(labelled):
    with pytest.raises(TokenmillError, match="no token rewards of kind rlpr") as e:
        run_recipe(labelled, "weighted-sft", ["r1"], {"std_filter_beta": 0.5})
    assert "--kinds rlpr" in e.value.fix
