"""Labelling a run again after a labeller's version changed adds the new rows next to the
old ones: a new version is a new config id, and the old rows stay as they were."""

import pyarrow.compute as pc

from tokenmill.config import CriticalConfig, RewardsConfig
from tokenmill.labelers.critical.labeler import CriticalLabeler
from tokenmill.labelers.rewards.labeler import RewardsLabeler
from tokenmill.storage.lake import Lake


def _label(labeler, lake):
    labeler.prepare(lake, "r1")
    for shard in lake.files("rollouts", "r1"):
        labeler.label_shard(lake, "r1", shard)


def _sorted(t):
    return t.sort_by([(c, "ascending") for c in ("config_id", "rollout_id", "pos")])


def _relabelled_beside(lake, table, old, new):
    _label(old, lake)
    before = _sorted(lake.read(table, "r1"))
    _label(new, lake)
    after = lake.read(table, "r1")
    versions = pc.unique(after.column("labeler_version")).to_pylist()
    assert sorted(versions) == sorted({old.version, new.version}) and len(versions) == 2
    kept = _sorted(after.filter(pc.field("labeler_version") == old.version))
    assert kept.equals(before)  # the old rows, unchanged
    assert after.num_rows == 2 * before.num_rows  # the new version labels every token again
    _label(new, lake)
    assert lake.read(table, "r1").num_rows == after.num_rows  # and once only


def test_rewards_of_a_new_version_land_beside_the_old_ones(copy_lake):
    class RewardsV1(RewardsLabeler):
        version = "1"

    cfg = RewardsConfig(kinds=["grpo", "entropy"])
    _relabelled_beside(Lake(copy_lake), "token_rewards", RewardsV1(cfg), RewardsLabeler(cfg))


def test_critical_labels_of_a_new_version_land_beside_the_old_ones(copy_lake):
    class CriticalV2(CriticalLabeler):
        version = "2"

    cfg = CriticalConfig(train="tiny", top_k=1)
    cfg.train.steps = 2
    _relabelled_beside(Lake(copy_lake), "critical", CriticalV2(cfg), CriticalLabeler(cfg))
