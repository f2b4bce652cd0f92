"""The LoRA hallucination probe (obalcells/hallucination_probes' variant) and the threshold
chosen on a validation split apart from the test split it is reported on."""

import json
import math
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.probe import threshold_on_validation
from tokenmill.tasks.train.probe_lora import adapters_off, add_probe_lora, kl_to_base


def test_kl_term_is_kl_of_the_base_distribution_to_the_lora_one_averaged_over_positions():
    lora = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])  # q = (3/4, 1/4); (second row: same as the base)
    base = torch.tensor([[0.0, 0.0], [1.0, 2.0]])  # p = (1/2, 1/2)
    # row 1: ½·ln(½ / ¾) + ½·ln(½ / ¼) = ½·ln(4/3); row 2: 0; mean over the two positions
    assert kl_to_base(lora, base).item() == pytest.approx(0.5 * math.log(4 / 3) / 2, rel=1e-6)
    # upstream's direction, KL(base ‖ LoRA): the reverse one, ¾·ln(3/2) + ¼·ln(½), would be 0.0654
    assert kl_to_base(lora, base).item() != pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2, rel=1e-3)
    assert kl_to_base(lora[:0], base[:0]).item() == 0.0  # a batch without completion positions


def test_lora_goes_on_every_decoder_layer_below_the_probes_and_starts_at_the_base_model():
    from tokenmill.engines.hf import load_hf
    from tokenmill.tasks.train.finetune import LoRALinear

    net, tok, _ = load_hf("tiny-small", device="cpu", dtype="float32")
    ids = torch.tensor([tok.encode("Ada Lovelace was born in")])
    before = net(input_ids=ids).logits
    params, layers = add_probe_lora(net, 1, None, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"], 16, 32.0, 0.0)
    assert layers == [0]  # hidden_states[1] is decoder layer 0's output: upstream's range(0, layer + 1)
    wrapped = sorted(n for n, m in net.named_modules() if isinstance(m, LoRALinear))
    assert wrapped == sorted(f"model.layers.0.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                             "mlp.down_proj"))
    assert len(params) == 14 and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in net.named_parameters() if "lora_" not in n)
    torch.testing.assert_close(net(input_ids=ids).logits, before)  # B = 0: the base model, KL 0 at step 0
    with torch.no_grad():
        for p in params[1::2]:
            p.fill_(0.1)
    moved = net(input_ids=ids).logits
    assert not torch.allclose(moved, before)
    with adapters_off(net):  # what the KL term's base forward sees
        torch.testing.assert_close(net(input_ids=ids).logits, before)
    torch.testing.assert_close(net(input_ids=ids).logits, moved)
    with pytest.raises(TokenmillError, match="no decoder layer below it"):
        add_probe_lora(net, 0, None, ["q_proj"], 16, 32.0, 0.0)


def test_threshold_is_chosen_on_validation_and_its_f1_reported_on_test():
    scores = np.array([0.9, 0.2, 0.5, 0.3, 0.6])
    y = np.array([1, 0, 1, 0, 0])
    val = np.array([True, True, False, False, False])
    # on validation ≥ 0.9 is perfect; on test alone ≥ 0.5 would be (F1 0.667 with the 0.6 negative), but the
    # test split only sees the validation threshold: nothing ≥ 0.9 there → F1 0
    threshold, val_f1, test_f1 = threshold_on_validation(scores, y, val, ~val)
    assert (threshold, val_f1, test_f1) == (0.9, 1.0, 0.0)
    # the other way round: on {0.5 +, 0.3 −, 0.6 −} the best cut is ≥ 0.5 (F1 2/3); on {0.9 +, 0.2 −} it keeps 0.9 alone
    assert threshold_on_validation(scores, y, ~val, val) == (0.5, pytest.approx(2 / 3), 1.0)

def test_lora_probe_trains_on_the_tiny_model_and_lands_its_record_and_artifact(bios_lake, tmp_path):
    from tokenmill.tasks.train.probe import load_probe, train_probe

    dest = tmp_path / "lake"
    shutil.copytree(bios_lake, dest)
    lake = Lake(str(dest))
    probe = train_probe(lake, "b", "tiny-small", kind="lora", lora_steps=6)
    assert probe["kind"] == "lora" and probe["layer"] == 1 and probe["lora_layers"] == [0]
    assert probe["train"]["lora_r"] == 16 and probe["train"]["kl_weight"] == 0.5 and probe["train"]["lora_steps"] == 6
    assert 0 <= probe["threshold"] <= 1 and 0 <= probe["val_span_f1"] <= 1 and 0 <= probe["test_span_f1"] <= 1
    assert math.isfinite(probe["final_kl"]) and probe["final_kl"] >= 0
    sp = probe["splits"]
    assert min(sp["train"]["spans"], sp["val"]["spans"], sp["test"]["spans"]) > 0
    art = lake.read("model_artifacts", "b", filter=pc.field("role") == "probe").to_pylist()
    assert len(art) == 1 and art[0]["steps"] == 6 and json.loads(art[0]["lineage"])["kind"] == "lora"
    ev = lake.read("probe_eval", "b").to_pylist()
    span_row = next(r for r in ev if r["level"] == "span" and r["method"] == "probe")
    assert span_row["positives"] + span_row["negatives"] == sp["test"]["spans"]  # the test split, not validation
    weights, meta = load_probe(lake, probe["path"])
    assert meta["kind"] == "lora" and weights["weight"].shape == (64,)
    assert sorted(weights["lora"]) == sorted(f"model.layers.0.{p}" for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
        "mlp.down_proj"))
    assert weights["lora"]["model.layers.0.mlp.up_proj"]["a"].shape[0] == 16
    assert any(v["b"].abs().sum() > 0 for v in weights["lora"].values())  # the adapters trained
    # the same data and settings find the stored probe; the linear one is another artifact
    assert train_probe(lake, "b", "tiny-small", kind="lora", lora_steps=6)["artifact_id"] == probe["artifact_id"]
    with pytest.raises(TokenmillError, match="no decoder layer below it"):
        train_probe(lake, "b", "tiny-small", kind="lora", lora_steps=2, layer=0)
