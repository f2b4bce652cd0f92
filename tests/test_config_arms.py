"""Arm rules live with the arm: every way of building a pipeline gets them."""

from __future__ import annotations

import pytest

from tokenmill.config import CriticalConfig, PipelineConfig


def test_sft_critical_labels_correct_rollouts_from_any_entry_point():
    # as a deployment's parameters or an API call give it: names, plain JSON
    from_json = PipelineConfig.model_validate({"arms": ["sft", "sft-critical"]})
    assert from_json.critical.include_correct is True
    assert PipelineConfig(arms=["sft-critical"], critical=CriticalConfig(beta=2.0)).critical.model_dump() == \
        CriticalConfig(beta=2.0, include_correct=True).model_dump()  # the arm's need, the rest as given


def test_arms_without_needs_leave_the_critical_settings_alone():
    assert PipelineConfig(arms=["dpo", "cdpo"]).critical.include_correct is False
    assert PipelineConfig(arms=["sft"], critical=CriticalConfig(top_k=7)).critical.top_k == 7


def test_the_tdpo_arm_trains_tdpo_on_dpo_pairs_with_dpos_settings():
    (arm,) = PipelineConfig(arms=["tdpo"], arm_train={"dpo": {"lr": 3e-6}}).arms
    assert (arm.name, arm.recipe, arm.guide) == ("tdpo", "dpo-pairs", None)
    assert (arm.train.objective, arm.train.weighting, arm.train.lr) == ("tdpo", "plain", 3e-6)
    from tokenmill.flows.pipeline import check_pipeline

    check_pipeline(PipelineConfig(arms=["dpo", "tdpo"], run_id="r1"))  # a pairs recipe for a pairs objective


def test_a_teacher_rolls_out_while_the_arms_train_and_evaluate_the_policy(tmp_path):
    cfg = PipelineConfig(lake=str(tmp_path / "lake"), run_id="d", model="tiny-small", teacher="tiny-large", arms=["sft"])
    assert cfg.rollouts().models == ["tiny-large"]
    assert cfg.train(cfg.arms[0], "ds").model == "tiny-small" and cfg.label().models == {"ref": "tiny-small"}
    assert PipelineConfig(lake=str(tmp_path / "lake"), run_id="d").rollouts().models == ["tiny-small"]


def test_the_on_sft_arms_bring_the_arms_they_start_from_and_are_guided_by():
    arms = {a.name: a for a in PipelineConfig(arms=["tgdpo-on-sft", "tdpo-on-sft"]).arms}
    assert list(arms) == ["sft", "dpo-on-sft", "tgdpo-on-sft", "tdpo-on-sft"]  # the fixed order: a guide before its user
    assert (arms["tgdpo-on-sft"].init, arms["tgdpo-on-sft"].guide, arms["tgdpo-on-sft"].train.weighting) == \
        ("sft", "dpo-on-sft", "tgdpo")
    assert (arms["tdpo-on-sft"].init, arms["tdpo-on-sft"].train.objective) == ("sft", "tdpo")
    from tokenmill.flows.pipeline import check_pipeline

    check_pipeline(PipelineConfig(arms=["tgdpo-on-sft", "tdpo-on-sft"], run_id="r1"))


def test_sft_routing_needs_a_teacher_and_labels_its_rollouts_against_the_policy():
    from tokenmill.errors import TokenmillError
    from tokenmill.flows.pipeline import check_pipeline

    own = PipelineConfig(arms=["sft", "sft-routing"], labelers=["rewards", "routing"], run_id="r1")
    with pytest.raises(TokenmillError, match="rollouts are tiny-small's own"):
        check_pipeline(own)  # the policy's own rollouts have nothing to route against: weights would be null
    distil = PipelineConfig(arms=["sft", "sft-routing"], labelers=["rewards", "routing"], run_id="r1",
                            teacher="tiny-large", model="tiny-small")
    check_pipeline(distil)
    assert distil.label().routing.small == "tiny-small"  # the policy is the small model
    (arm,) = [a for a in distil.arms if a.name == "sft-routing"]
    assert arm.families_read() == {"routing"} and arm.train.weighting == "dataset"
    with pytest.raises(TokenmillError, match="reads labels of routing"):
        check_pipeline(distil.model_copy(update={"labelers": ["rewards"]}))


def test_sft_entropy_reads_the_entropy_reward_kind():
    (arm,) = PipelineConfig(arms=["sft-entropy"]).arms
    assert arm.scopes_read() == {("rewards", "entropy")} and arm.params["where"] == "verdict = 'correct'"
