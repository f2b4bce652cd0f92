import math

import pyarrow.compute as pc
import pytest

from tokenmill import datasets as D
from tokenmill.errors import TokenmillError
from tokenmill.curation.curate import run_recipe
from tokenmill.tasks.train.weighted import train_weighted


def _dataset(lake, recipe, params=None):
    r, p, rows = run_recipe(lake, recipe, ["r1"], params or {})
    return D.write(lake, D.build(r.kind, rows), recipe=r.name, kind=r.kind, params=p, runs=["r1"])["dataset_id"]


def test_weighted_dpo_trains_stores_the_model_and_logs_metrics(labelled):
    ds = _dataset(labelled, "cdpo-pairs")
    out = train_weighted(labelled, ds, "tiny-small", "dpo", steps=12, lr=1e-4, batch=4, grad_accum=2, log_every=4)
    m = labelled.read("train_metrics", "r1").sort_by("step").to_pylist()
    assert [r["step"] for r in m] == [4, 8, 12] and all(r["objective"] == "dpo" for r in m)
    assert m[-1]["margin"] > m[0]["margin"]  # the policy moves towards chosen over (weighted) rejected
    art = labelled.read("model_artifacts", "r1", filter=pc.field("artifact_id") == out["artifact_id"]).to_pylist()[0]
    assert art["role"] == "dpo" and ds in art["lineage"] and "cdpo-pairs" in art["lineage"]
    from tokenmill.engines.hf import load_hf

    load_hf(out["local_path"])  # a loadable model
    again = train_weighted(labelled, ds, "tiny-small", "dpo", steps=12, lr=1e-4, batch=4, grad_accum=2, log_every=4)
    assert again["reused"] and again["artifact_id"] == out["artifact_id"]
    assert labelled.read("train_metrics", "r1").num_rows == 3


def test_weighted_sft_trains_and_plain_sft_is_another_model(labelled):
    ds = _dataset(labelled, "weighted-sft", {"weight": "coalesce(critical_weight, 1.0)", "where": "true"})
    a = train_weighted(labelled, ds, "tiny-small", "sft", steps=3, batch=4, log_every=1)
    b = train_weighted(labelled, ds, "tiny-small", "sft", weighting="plain", steps=3, batch=4, log_every=1)
    assert a["artifact_id"] != b["artifact_id"] and a["tokens"] > 0
    with pytest.raises(TokenmillError, match="dpo needs a pairs dataset"):
        train_weighted(labelled, ds, "tiny-small", "dpo", steps=1)
    with pytest.raises(TokenmillError, match="sft has no weighting 'tgdpo'"):
        train_weighted(labelled, ds, "tiny-small", "sft", weighting="tgdpo", steps=1)
    # D³S's dynamic keep schedule trains fewer tokens and is another model
    c = train_weighted(labelled, ds, "tiny-small", "sft", steps=3, batch=4, log_every=1, keep_start=0.2, keep_end=0.6)
    assert c["artifact_id"] != a["artifact_id"] and 0 < c["tokens"] < a["tokens"]
    with pytest.raises(TokenmillError, match="dynamic keep schedule"):
        train_weighted(labelled, ds, "tiny-small", "sft", weighting="plain", steps=1, keep_start=0.2)


def test_tgdpo_needs_token_rewards_then_trains_on_them(labelled, add_dpo_rewards):
    ds = _dataset(labelled, "dpo-pairs")
    with pytest.raises(TokenmillError, match="tgdpo needs token rewards"):
        train_weighted(labelled, ds, "tiny-small", "dpo", weighting="tgdpo", steps=1)
    cid = add_dpo_rewards(labelled, 0.01)
    ds = _dataset(labelled, "dpo-pairs", {"reward_config": cid})
    out = train_weighted(labelled, ds, "tiny-small", "dpo", weighting="tgdpo", alpha=0.5, steps=2, batch=2, log_every=1)
    plain = train_weighted(labelled, ds, "tiny-small", "dpo", weighting="plain", steps=2, batch=2, log_every=1)
    assert out["artifact_id"] != plain["artifact_id"] and out["alpha"] == 0.5
    m = {r["artifact_id"]: r["loss"] for r in labelled.read("train_metrics", "r1").filter(pc.field("step") == 2).to_pylist()}
    # same seed and batches; step 1 moved the two policies by different per-token β (at step 1
    # the policy is the reference, so both losses are log 2)
    assert m[out["artifact_id"]] != pytest.approx(m[plain["artifact_id"]], abs=1e-7)


def test_tdpo_trains_on_pairs_with_the_reference_beside_the_policy(labelled):
    ds = _dataset(labelled, "dpo-pairs")
    out = train_weighted(labelled, ds, "tiny-small", "tdpo", steps=2, batch=2, log_every=1)
    assert out["weighting"] == "plain" and out["tdpo_variant"] == "tdpo1" and "tdpo_alpha" not in out
    m = labelled.read("train_metrics", "r1", filter=pc.field("artifact_id") == out["artifact_id"]).sort_by("step").to_pylist()
    assert [r["step"] for r in m] == [1, 2] and all(r["objective"] == "tdpo" for r in m)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["margin"]) for r in m)
    # at step 1 the policy is the reference: no log-ratio, no KL, the loss is log 2
    assert m[0]["loss"] == pytest.approx(math.log(2), abs=1e-4) and m[0]["margin"] == pytest.approx(0.0, abs=1e-4)
    art = labelled.read("model_artifacts", "r1", filter=pc.field("artifact_id") == out["artifact_id"]).to_pylist()[0]
    assert art["role"] == "tdpo" and ds in art["lineage"]
    two = train_weighted(labelled, ds, "tiny-small", "tdpo", tdpo_variant="tdpo2", tdpo_alpha=0.25, steps=2, batch=2)
    assert two["artifact_id"] != out["artifact_id"] and two["tdpo_alpha"] == 0.25
    with pytest.raises(TokenmillError, match="tdpo has no weighting 'dataset'"):
        train_weighted(labelled, ds, "tiny-small", "tdpo", weighting="dataset", steps=1)


def test_linear_schedule_decays_the_learning_rate_to_lr_over_steps_and_is_another_model(labelled):
    ds = _dataset(labelled, "weighted-sft", {"where": "true"})
    const = train_weighted(labelled, ds, "tiny-small", "sft", steps=4, lr=1e-4, batch=2, log_every=1)
    lin = train_weighted(labelled, ds, "tiny-small", "sft", steps=4, lr=1e-4, batch=2, log_every=1, schedule="linear")
    assert lin["artifact_id"] != const["artifact_id"] and lin["schedule"] == "linear" and "schedule" not in const
    lrs = {r["artifact_id"]: [] for r in [const, lin]}
    for r in labelled.read("train_metrics", "r1").sort_by("step").to_pylist():
        lrs.setdefault(r["artifact_id"], []).append(r["lr"])
    # step k of 4 at lr · (1 − (k − 1)/4): 1e-4, 7.5e-5, 5e-5, 2.5e-5
    assert lrs[lin["artifact_id"]] == pytest.approx([1e-4, 7.5e-5, 5e-5, 2.5e-5])
    assert lrs[const["artifact_id"]] == pytest.approx([1e-4] * 4)


def test_rpo_adds_alpha_times_the_chosen_nll_to_the_dpo_loss_and_is_another_model(labelled):
    ds = _dataset(labelled, "dpo-pairs")
    kw = dict(steps=1, lr=1e-4, batch=4, log_every=1)
    runs = {a: train_weighted(labelled, ds, "tiny-small", "dpo", rpo_alpha=a, **kw) for a in (0.0, 1.0, 2.0)}
    assert len({r["artifact_id"] for r in runs.values()}) == 3
    assert "rpo_alpha" not in runs[0.0] and runs[2.0]["rpo_alpha"] == 2.0  # off: ids as before the option
    loss = {r["artifact_id"]: r["loss"] for r in labelled.read("train_metrics", "r1").to_pylist()}
    step1 = {a: loss[r["artifact_id"]] for a, r in runs.items()}
    # step 1: the policy is the reference, so the DPO term is log 2; the rest is α · NLL of the same drawn batch
    assert step1[0.0] == pytest.approx(math.log(2), abs=1e-5)
    nll = step1[1.0] - math.log(2)
    assert nll > 0.1 and step1[2.0] - math.log(2) == pytest.approx(2 * nll, rel=1e-4)


def test_warmup_factors_are_hf_schedules_with_step_1_as_their_step_0():
    from torch import nn, optim
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    from tokenmill.tasks.train.weighted import lr_factor

    # by hand: 10 steps, ⌈0.2 · 10⌉ = 2 warm-up steps: 0, 1/2, then (10 − k)/8 for k = 2 … 9
    assert [lr_factor(s, 10, "linear", 2) for s in range(1, 11)] == pytest.approx(
        [0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert [lr_factor(s, 4, "constant", 2) for s in range(1, 5)] == [0, 0.5, 1, 1]
    assert [lr_factor(s, 4, "linear") for s in range(1, 5)] == [1, 0.75, 0.5, 0.25]  # no warm-up: as before
    for steps, warm in ((7, 1), (30, 3), (100, 10)):  # and HF's own schedulers, stepped as its Trainer steps them
        for schedule, make in (("linear", lambda o: get_linear_schedule_with_warmup(o, warm, steps)),
                               ("constant", lambda o: get_constant_schedule_with_warmup(o, warm))):
            opt = optim.AdamW(nn.Linear(1, 1).parameters(), lr=1.0)
            sched, hf = make(opt), []
            for _ in range(steps):
                hf.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            assert [lr_factor(s, steps, schedule, warm) for s in range(1, steps + 1)] == pytest.approx(hf)


def test_weight_decay_skips_biases_and_norms_as_hf_trainer_does():
    from tokenmill.engines.hf import load_hf
    from tokenmill.tasks.train.weighted import param_groups

    model = load_hf("tiny-small")[0]
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, kept = param_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and kept["weight_decay"] == 0.0
    kept_names = {names[id(p)] for p in kept["params"]}
    assert kept_names and all("norm" in n or n.endswith("bias") for n in kept_names), kept_names
    assert all("norm" not in names[id(p)] for p in decayed["params"]) and decayed["params"]
    assert len(decayed["params"]) + len(kept["params"]) == len(names)
    assert len(param_groups(model, 0.0)) == 1


def test_warmup_and_weight_decay_train_another_model_with_the_hf_learning_rates(labelled):
    ds = _dataset(labelled, "weighted-sft", {"where": "true"})
    plain = train_weighted(labelled, ds, "tiny-small", "sft", steps=5, lr=1e-4, batch=2, log_every=1, schedule="linear")
    warm = train_weighted(labelled, ds, "tiny-small", "sft", steps=5, lr=1e-4, batch=2, log_every=1, schedule="linear",
                          warmup=0.1, weight_decay=0.01)
    assert warm["artifact_id"] != plain["artifact_id"] and (warm["warmup"], warm["weight_decay"]) == (0.1, 0.01)
    assert "warmup" not in plain and "weight_decay" not in plain  # unset: ids as before the options
    lrs = [r["lr"] for r in labelled.read("train_metrics", "r1", filter=pc.field("artifact_id") == warm["artifact_id"])
           .sort_by("step").to_pylist()]
    # ⌈0.1 · 5⌉ = 1 warm-up step at 0, then 1e-4 · (5 − k)/4
    assert lrs == pytest.approx([0, 1e-4, 7.5e-5, 5e-5, 2.5e-5])
