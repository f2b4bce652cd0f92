"""Contrast-model fine-tuning: LoRA by hand (starts as the base, merges exactly, trains only
its targets), epochs → steps, bf16 saves, and progress in the CLI's sink and Prefect's UI."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tokenmill.config import ContrastTrainConfig
from tokenmill.engines import get_engine
from tokenmill.engines.hf import load_hf
from tokenmill import progress
from tokenmill.tasks.train.finetune import LoRALinear, add_lora, finetune, merge_lora, planned_steps, save_model

IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 2]])


def _data(n=9):
    prompts = [[1, 30 + i, 31, 32] for i in range(n)]
    completions = [[50 + i, 51, 52, 53, 2] for i in range(n)]
    return prompts, completions


def test_lora_starts_as_the_base_model_and_merges_exactly():
    model, _, _ = load_hf("tiny-small", device="cpu", dtype="float32")
    with torch.no_grad():
        base = model(IDS).logits
    params = add_lora(model, ["gate_proj", "up_proj", "down_proj"], r=4, alpha=8, dropout=0.1)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 3 * model.config.num_hidden_layers and len(params) == 2 * len(wrapped)
    assert [p for p in model.parameters() if p.requires_grad] == params  # everything else frozen
    model.eval()  # no dropout
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, base)  # B = 0: the policy itself
        for m in wrapped:
            m.lora_b.normal_()
        # y = W x + (α/r)·B A x on one layer, by hand
        layer = wrapped[0]
        x = torch.randn(3, layer.base.in_features)
        torch.testing.assert_close(layer(x), x @ layer.base.weight.T + 2.0 * (x @ layer.lora_a.T @ layer.lora_b.T))
        adapted = model(IDS).logits
        merge_lora(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(IDS).logits, adapted, rtol=1e-4, atol=1e-4)


def test_lora_names_the_modules_it_can_target():
    model, _, _ = load_hf("tiny-small", device="cpu", dtype="float32")
    with pytest.raises(ValueError, match=r"no Linear module named c_fc.*gate_proj.*q_proj"):
        add_lora(model, ["c_fc"], 8, 16, 0.0)


def test_epochs_set_the_steps_unless_steps_are_given():
    recipe = ContrastTrainConfig()
    assert planned_steps(13, recipe) == 3  # ⌈13 / 6⌉, one epoch
    assert planned_steps(13, recipe.model_copy(update={"epochs": 2})) == 6
    assert planned_steps(13, recipe.model_copy(update={"steps": 5})) == 5


def test_lora_finetune_changes_only_its_targets_and_follows_the_recipe():
    prompts, completions = _data(9)
    recipe = ContrastTrainConfig(warmup_steps=0, epochs=2, lr=1e-2, lora_dropout=0.0)
    model, _, losses = finetune("tiny-small", prompts, completions, recipe, seed=3)
    assert len(losses) == 2 * math.ceil(9 / 6) and all(math.isfinite(x) for x in losses)
    base, _, _ = load_hf("tiny-small", device="cpu", dtype="float32")
    before, after = base.state_dict(), model.state_dict()
    assert before.keys() == after.keys()  # merged back into a plain Llama
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 2)[-2] in {"gate_proj", "up_proj", "down_proj"} for k in changed)
    # the same seed gives the same model
    again, _, losses2 = finetune("tiny-small", prompts, completions, recipe, seed=3)
    assert losses2 == losses and all(torch.equal(after[k], v) for k, v in again.state_dict().items())


def test_warmup_starts_at_learning_rate_zero_as_the_trainer_does():
    # Hugging Face's Trainer steps the schedule after the optimizer: with warm-up, step 1 has
    # lr 0, so one step leaves the model as it was
    prompts, completions = _data(3)
    model, _, losses = finetune("tiny-small", prompts, completions, ContrastTrainConfig(steps=1, method="full"))
    base, _, _ = load_hf("tiny-small", device="cpu", dtype="float32")
    assert len(losses) == 1 and all(torch.equal(v, model.state_dict()[k]) for k, v in base.state_dict().items())


def test_bf16_saves_half_the_bytes_and_load_as_an_engine(tmp_path):
    prompts, completions = _data(4)
    model, tok, _ = finetune("tiny-small", prompts, completions, ContrastTrainConfig.named("tiny", steps=2))
    save_model(model, tok, str(tmp_path / "f32"), "float32")
    save_model(model, tok, str(tmp_path / "bf16"), "bfloat16")
    sizes = {d: (tmp_path / d / "model.safetensors").stat().st_size for d in ("f32", "bf16")}
    assert sizes["bf16"] < 0.52 * sizes["f32"]
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    engine = get_engine("hf", str(tmp_path / "bf16"))  # upcast to float32 on CPU
    scored = engine.score(prompts, completions)
    assert all(torch.isfinite(torch.as_tensor(s.logprobs)).all() for s in scored)


def test_finetune_reports_steps_and_loss_to_the_progress_sink():
    prompts, completions = _data(8)
    seen = []
    with progress.use_sink(lambda stage, done, total: seen.append((stage, done, total, progress.note_of(stage)))):
        _, _, losses = finetune("tiny-small", prompts, completions, ContrastTrainConfig(steps=4, warmup_steps=0),
                                stage="train pos model (tiny-small)")
    assert [s[:3] for s in seen] == [("train pos model (tiny-small)", i, 4) for i in range(5)]
    assert seen[0][3] == "" and [s[3] for s in seen[1:]] == [f"loss {x:.3f}" for x in losses]


@pytest.mark.slow
def test_finetune_progress_shows_in_the_prefect_ui(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tokenmill.report.artifacts import artifact_key

    prompts, completions = _data(6)

    @flow
    def train_in_prefect():
        return finetune("tiny-small", prompts, completions, ContrastTrainConfig(steps=3), stage="train neg model (ui)")[2]

    losses = train_in_prefect()
    key = artifact_key("progress", "train neg model (ui)")
    with get_client(sync_client=True) as client:
        art = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))[-1]
    assert art.type == "progress" and float(art.data) == pytest.approx(100.0)
    assert art.description == f"train neg model (ui) (loss {losses[-1]:.3f}): 3/3"


def test_the_held_out_step_of_lowest_loss_is_the_model_kept():
    prompts, completions = _data(40)  # 300 asked, at most a tenth: the last 4 held out
    recipe = ContrastTrainConfig(warmup_steps=0, schedule="constant", lr=5e-2, epochs=3, batch=6, eval_steps=2,
                                 lora_dropout=0.0)
    history = {}
    model, _, losses = finetune("tiny-small", prompts, completions, recipe, seed=1, history=history)
    assert history["val_examples"] == 4 and len(losses) == 3 * math.ceil(36 / 6)
    steps, val = zip(*history["evals"])
    assert steps == (2, 4, 6, 8, 10, 12, 14, 16, 18)
    assert history["kept_step"] == steps[int(np.argmin(val))]
    # the same run stopped at the kept step is the same model (constant lr: the steps before it are alike)
    short, _, _ = finetune("tiny-small", prompts, completions, recipe.model_copy(update={"steps": history["kept_step"]}),
                           seed=1)
    kept, again = model.state_dict(), short.state_dict()
    assert all(torch.equal(kept[k], again[k]) for k in kept)
    # a run shorter than eval_steps is never evaluated and keeps its last step, as the Trainer does
    history = {}
    finetune("tiny-small", prompts, completions, recipe.model_copy(update={"steps": 1}), seed=1, history=history)
    assert history == {"val_examples": 4, "evals": [], "kept_step": 1}
