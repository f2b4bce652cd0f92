"""Named pipeline presets: `tokenmill pipeline --preset X` and a deployment's `cfg: {preset: X}`
build the same PipelineConfig, and the CLI's shown defaults are the preset's."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml

from tests.test_cli import tokenmill
from tokenmill.cli import pipeline_config
from tokenmill.config import DEFAULT_PRESET, PIPELINE_PRESETS, PipelineConfig

DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"


def _deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(DEPLOYMENTS.read_text())["deployments"]}


def _flow_config(entrypoint: str):
    module, _, name = entrypoint.rpartition(".")
    flow = getattr(importlib.import_module(module), name)
    fn = getattr(flow, "fn", flow)
    hint = inspect.signature(fn).parameters["cfg"].annotation
    return hint if not isinstance(hint, str) else vars(inspect.getmodule(fn))[hint]


def _dump(cfg: PipelineConfig) -> dict:
    return json.loads(cfg.model_dump_json())


def test_the_nightly_deployment_and_the_cli_run_the_same_experiment():
    cfg = _deployments()["nightly"]["parameters"]["cfg"]
    assert cfg["preset"] == DEFAULT_PRESET
    deployed = PipelineConfig.model_validate(cfg)
    cli = pipeline_config(cfg["preset"], lake=cfg["lake"], run_id=cfg["run_id"])
    assert _dump(deployed) == _dump(cli)
    # and without --preset: the default preset is the nightly one
    assert _dump(pipeline_config(None, lake=cfg["lake"], run_id=cfg["run_id"])) == _dump(deployed)


@pytest.mark.parametrize("preset", sorted(PIPELINE_PRESETS))
def test_print_config_is_the_preset_a_deployment_names(preset, tmp_path):
    lake = str(tmp_path / "lake")
    out = tokenmill("pipeline", "--preset", preset, "--lake", lake, "--run", "p1", "--print-config")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _dump(PipelineConfig.model_validate({"preset": preset, "lake": lake, "run_id": "p1"}))


def test_a_preset_fills_only_what_is_not_given():
    smol = PipelineConfig(preset="smollm2", prompts=3, sampling={"temperature": 0.2})
    assert (smol.model, smol.prompts, smol.sampling.temperature) == ("smollm2-135m", 3, 0.2)
    assert smol.sampling.n == PIPELINE_PRESETS["smollm2"]["sampling"]["n"]  # merged, not replaced
    dpo = next(a for a in smol.arms if a.name == "dpo")
    assert dpo.train.lr == PIPELINE_PRESETS["smollm2"]["arm_train"]["dpo"]["lr"]


def test_an_option_for_every_arm_beats_the_presets_per_objective_value():
    cfg = pipeline_config("smollm2", lr=3e-6, arm=["dpo", "sft"])
    assert {a.name: a.train.lr for a in cfg.arms} == {"dpo": 3e-6, "sft": 3e-6}


def test_an_unknown_preset_is_one_clear_line(tmp_path):
    out = tokenmill("pipeline", "--preset", "nope", "--lake", str(tmp_path / "lake"), "--print-config")
    assert out.returncode == 2 and "unknown preset 'nope'" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_help_shows_the_default_presets_values():
    out = tokenmill("pipeline", "--help")
    tiny = PipelineConfig.model_validate({"preset": DEFAULT_PRESET})
    text = " ".join(out.stdout.split())
    assert f"Samples per prompt. [default: ({tiny.sampling.n})]" in text, text
    assert f"Held-out prompts for the evaluation. [default: ({tiny.eval.prompts})]" in text, text


@pytest.mark.parametrize("name", sorted(_deployments()))
def test_every_deployments_parameters_are_its_flows_config(name):
    d = _deployments()[name]
    model = _flow_config(d["entrypoint"])
    model.model_validate(d["parameters"]["cfg"])  # a typo or a stale field fails here, not at 2 am


@pytest.mark.parametrize("cfg, field", [({"promts": 3}, "promts"), ({"sampling": {"m": 1}}, "sampling.m"),
                                        ({"critical": {"bta": 2.0}}, "critical.bta"),
                                        ({"arm_train": {"dpo": {"lr": 1e-6}}, "eval": {"prompt": 4}}, "eval.prompt")])
def test_a_field_no_config_has_is_refused_not_ignored(cfg, field):
    from pydantic import ValidationError

    from tokenmill.errors import invalid_config

    with pytest.raises(ValidationError) as e:
        PipelineConfig.model_validate(cfg)
    assert str(invalid_config(e.value)).startswith(f"unknown config field PipelineConfig.{field}")


def test_the_efficacy_deployment_is_the_studys_default_experiment():
    from tokenmill.studies.efficacy_config import EfficacyConfig

    dep = _deployments()["efficacy"]
    assert _flow_config(dep["entrypoint"]) is EfficacyConfig
    cfg = EfficacyConfig.model_validate(dep["parameters"]["cfg"])
    assert cfg.run_prefix.startswith("efficacy-2") and "{" not in cfg.run_prefix  # one study a day
    assert cfg.model_dump(exclude={"lake", "run_prefix"}) == EfficacyConfig().model_dump(exclude={"lake", "run_prefix"})


def test_the_efficacy_preset_is_one_seed_of_the_study():
    from tokenmill.studies.efficacy import configs_for
    from tokenmill.studies.efficacy_config import EfficacyConfig

    study = configs_for(EfficacyConfig(lake="l", seeds=[0]))[0]
    preset = PipelineConfig.from_preset("efficacy", lake="l", run_id=study.run_id)
    keys = ("model", "teacher", "prompts", "labelers", "rewards", "routing", "arms", "eval")
    assert {k: _dump(preset)[k] for k in keys} == {k: _dump(study)[k] for k in keys}
    assert _dump(preset)["sampling"]["n"] == study.sampling.n
