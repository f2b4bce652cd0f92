"""The model builder on a reduced schedule, and the properties of the bundled models."""

import json

import pytest

from tokenmill.engines import SamplingParams, get_engine
from tokenmill.models.builder import SPECS, build
from tokenmill.studies.model_table import evaluate
from tokenmill.models.registry import BUNDLED, TINY_DIR, resolve_model
from tokenmill.sources.worlds import get_world


def test_builder_trains_loadable_models_on_a_reduced_schedule(tmp_path):
    info = build(tmp_path, scale=0.02, steps=15)
    assert set(info) == set(SPECS)
    for name, meta in info.items():
        assert meta["steps"] == 15 and meta["final_loss"] > 0
        model_dir = tmp_path / name
        assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
        assert not (tmp_path / f".{name}.tmp").exists()
        engine = get_engine("hf", str(model_dir))
        gens = engine.generate([get_world("arithmetic").prompts(1)[0].prompt], SamplingParams(max_tokens=8))
        assert 1 <= len(gens[0].token_ids) <= 8
    # both models share one tokenizer
    assert (tmp_path / "tiny-small" / "tokenizer.json").read_text() == (tmp_path / "tiny-large" / "tokenizer.json").read_text()


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_models_fit_the_size_and_vllm_cpu_limits(name):
    path = TINY_DIR / name
    assert (path / "model.safetensors").stat().st_size <= 10 * 1024 * 1024
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU attention
    assert resolve_model(name).model_id == name


def test_bundled_models_share_one_tokenizer():
    small, large = (TINY_DIR / n / "tokenizer.json" for n in BUNDLED)
    assert small.read_text() == large.read_text()


@pytest.mark.slow
def test_bundled_models_are_useful_and_the_large_one_is_better():
    table = evaluate(list(BUNDLED), n=60).to_pylist()
    acc = {(r["model"], r["world"], r["split"]): r for r in table}
    small, large = acc[("tiny-small", "arithmetic", "test")], acc[("tiny-large", "arithmetic", "test")]
    assert 0 < small["accuracy"] < 1 and 0 < large["accuracy"] < 1
    assert large["accuracy"] >= small["accuracy"] + 0.1
    for model in BUNDLED:
        code = acc[(model, "code", "test")]
        assert code["parses"] > 0.5 and code["accuracy"] > 0
        # facts of people seen in training are mostly right; of unseen people, made up
        assert acc[(model, "bios", "train")]["mean_reward"] > 0.5
        assert acc[(model, "bios", "test")]["mean_reward"] < 0.5
