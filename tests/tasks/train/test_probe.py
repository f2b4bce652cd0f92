import shutil

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from tokenmill.config import ProbeConfig
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.metrics import roc_auc, split_hash
from tokenmill.tasks.train.probe import best_f1_threshold, prompt_splits, span_index, span_max, split_masks


def test_roc_auc_on_hand_cases():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5  # a tie counts one half
    assert roc_auc(np.array([0.9, np.nan, 0.1]), np.array([1, 1, 0])) == 1.0  # NaN scores are dropped
    assert np.isnan(roc_auc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_span_max_takes_the_largest_logit_of_each_span():
    logits = torch.tensor([0.1, 2.0, -1.0, 0.5, 3.0])
    tok, span = span_index(np.array([0, 2, 1]), np.array([2, 3, 1]))  # spans 0–1, 2–4, 1–1 (overlapping)
    assert tok.tolist() == [0, 1, 2, 3, 4, 1] and span.tolist() == [0, 0, 1, 1, 1, 2]
    assert span_max(logits, torch.from_numpy(tok), torch.from_numpy(span), 3).tolist() == [2.0, 3.0, 2.0]


def test_f1_threshold_cuts_between_distinct_scores():
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    y = np.array([1, 1, 0, 0, 1])
    # ≥ .9: P 1 R 1/3 → .5;  ≥ .8: P 2/3 R 2/3 → .667;  ≥ .3: .571;  ≥ .1: P 3/5 R 1 → .75
    assert best_f1_threshold(scores, y) == (0.1, pytest.approx(0.75))


def test_prompt_splits_rank_the_held_out_prompts_into_validation_and_test():
    prompts = [f"p{i}" for i in range(40)]
    u = dict(zip(prompts, split_hash(prompts, 0)))
    ranked = sorted(prompts, key=u.get)
    split = prompt_splits(prompts, 0.25, 0.5, 0)
    held = [p for p in ranked if u[p] < 0.25]  # the hash split the probe always had
    assert [p for p in ranked if split[p] != "train"] == held and len(held) >= 4
    n_val = round(0.5 * len(held))
    assert [split[p] for p in held] == ["val"] * n_val + ["test"] * (len(held) - n_val)
    # a run too small for the hash to hold anything out still gets one validation and one test prompt
    few = ranked[-3:]  # the three highest hashes: all u ≥ 0.25
    assert sorted(prompt_splits(few, 0.25, 0.5, 0).values()) == ["test", "train", "val"]
    assert prompt_splits(few[:2], 0.25, 0.5, 0)[few[0]] == "val"  # two prompts: one trains, one validates, no test
    assert sorted(prompt_splits(few[:2], 0.25, 0.5, 0).values()) == ["train", "val"]
    # a tiny threshold_frac still validates on one prompt; a large one leaves one for test
    assert list(prompt_splits(prompts, 0.25, 0.01, 0).values()).count("val") == 1
    assert list(prompt_splits(prompts, 0.25, 0.99, 0).values()).count("test") == 1
    held_rows, val_rows = split_masks(split, ["p0", "unknown", ranked[0]])
    assert held_rows.tolist() == [split["p0"] != "train", False, True] and val_rows[2]


def test_probe_flow_trains_scores_hidden_states_and_evaluates_on_held_out_prompts(prefect_harness, bios_lake, tmp_path):
    from tokenmill.flows.train import probe_flow

    dest = tmp_path / "lake"
    shutil.copytree(bios_lake, dest)
    cfg = ProbeConfig(lake=str(dest), run_id="b", steps=100)
    out = probe_flow(cfg)
    probe = out["probes"]["tiny-small"]
    assert probe["layer"] == 1 and 0 <= probe["threshold"] <= 1
    lake = Lake(str(dest))
    hidden = lake.read("hidden_states", "b", columns=["layer", "model_id"])
    assert set(hidden.column("layer").to_pylist()) == {1}
    ev = lake.read("probe_eval", "b").to_pylist()
    assert {(r["level"], r["method"]) for r in ev} == {
        ("span", m) for m in ("probe", "1 - min_prob", "1 - mean_prob", "mean_entropy", "1 - ccp", "1 - consistency")
    } | {("token", m) for m in ("probe", "1 - prob", "entropy")}
    # evaluated on the held-out prompts' labelled spans, and only those
    con = connect(lake)
    spans = con.execute("""SELECT r.prompt_id FROM hallucination_spans s JOIN rollouts r USING (run_id, rollout_id)
                           WHERE s.label IN ('supported', 'not_supported') AND s.start_pos <= s.end_pos""").fetchall()
    prompts = [p for (p,) in spans]
    split = prompt_splits(prompts, 0.25, 0.5, 0)
    test = np.array([split[p] == "test" for p in prompts])
    span_row = next(r for r in ev if r["level"] == "span" and r["method"] == "probe")
    assert span_row["positives"] + span_row["negatives"] == int(test.sum()) == probe["splits"]["test"]["spans"] > 0
    assert probe["kind"] == "linear" and {"val_span_f1", "test_span_f1"} <= set(probe)
    assert all(0 <= r["auc"] <= 1 for r in ev)
    # min_prob is a real signal here: hallucinated facts are the uncertain ones
    assert next(r for r in ev if r["method"] == "1 - min_prob")["auc"] > 0.7
    from tokenmill.tasks.train.probe import load_probe

    weights, meta = load_probe(lake, probe["path"])  # saved with its layer and threshold
    assert meta["layer"] == 1 and meta["threshold"] == probe["threshold"]
    assert weights["weight"].shape == weights["mean"].shape == (64,)
    again = probe_flow(cfg)
    assert again["probes"]["tiny-small"]["artifact_id"] == probe["artifact_id"]
    assert lake.read("model_artifacts", "b", filter=pc.field("role") == "probe").num_rows == 1
    assert lake.read("probe_eval", "b").num_rows == len(ev)


def test_probe_needs_hallucination_spans(copy_lake):
    from tokenmill.tasks.train.probe import train_probe

    with pytest.raises(TokenmillError, match="no hallucination spans"):
        train_probe(Lake(str(copy_lake)), "r1", "tiny-small")


def test_probe_flow_skips_a_model_it_found_whose_spans_cannot_be_split(prefect_harness, bios_lake, tmp_path):
    from conftest import make_run

    from tokenmill.flows.train import probe_flow
    from tokenmill.labelers.hallucination.labeler import HallucinationLabeler
    from tokenmill.tasks.train.probe import ProbeDataError

    dest = tmp_path / "lake"
    shutil.copytree(bios_lake, dest)
    lake = Lake(str(dest))
    before = set(lake.files("rollouts", "b"))
    make_run(str(dest), run_id="b", models=("tiny-large",), n_prompts=1, samples=2, max_tokens=60, world="bios", split="all")
    for shard in set(lake.files("rollouts", "b")) - before:
        HallucinationLabeler().label_shard(lake, "b", shard)
    out = probe_flow(ProbeConfig(lake=str(dest), run_id="b", steps=20))
    assert set(out["probes"]) == {"tiny-small"}
    assert "cannot be split" in out["skipped"]["tiny-large"]
    # refused before any hidden state of tiny-large was scored
    scored = connect(lake).execute("""SELECT DISTINCT r.model FROM hidden_states h
                                      JOIN rollouts r USING (run_id, rollout_id)""").fetchall()
    assert scored == [("tiny-small",)]
    # a model the user names must get its probe: the same thin model is an error then
    with pytest.raises(ProbeDataError, match="tiny-large .*cannot be split"):
        probe_flow(ProbeConfig(lake=str(dest), run_id="b", steps=20, models=["tiny-large"]))


def test_token_targets_follow_upstreams_long_form_labels_and_weights():
    from tokenmill.tasks.train.probe import token_targets

    label = np.array([-100, 1, 1, -100, 0, -100])   # outside, not-supported ×2, unverifiable, supported, outside
    in_span = np.array([False, True, True, True, True, False])
    y, w = token_targets(label, in_span, "negative", "span", 10.0)
    assert y.tolist() == [0, 1, 1, -100, 0, 0] and w.tolist() == [1, 10, 10, 1, 10, 1]
    y, w = token_targets(label, in_span, "ignore", "balanced", 10.0)  # tokenmill's earlier recipe
    assert y.tolist() == [-100, 1, 1, -100, 0, -100] and w.tolist() == [1] * 6
