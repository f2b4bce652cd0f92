"""Held-out evaluation: computed once per model and settings, reported under the caller's arm name."""

from tokenmill.storage.lake import Lake
from tokenmill.tasks.eval_config import EvalConfig
from tokenmill.tasks.evaluate import evaluate_model


def test_a_reused_evaluation_is_reported_under_the_arm_that_asks_for_it(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    cfg = EvalConfig(prompts=4, max_tokens=16)
    first = evaluate_model(lake, "r", "tiny-small", "tiny-small", cfg, arm="dpo-pilot")
    again = evaluate_model(lake, "r", "tiny-small", "tiny-small", cfg, arm="dpo")
    assert first["arm"] == "dpo-pilot" and again["arm"] == "dpo"  # a study summarises by its own arm names
    assert again["eval_id"] == first["eval_id"] and again["accuracy"] == first["accuracy"]
    rows = lake.read("model_eval", "r").to_pylist()
    assert len(rows) == 1 and rows[0]["arm"] == "dpo-pilot"  # evaluated once; the stored row is not rewritten
