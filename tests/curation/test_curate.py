"""Curation recipes and the dataset format, on a small lake built here (labels written by hand)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from tokenmill import datasets as D
from tokenmill.errors import TokenmillError
from tokenmill.curation.curate import run_recipe


def test_cdpo_pairs_weight_the_rejected_side_by_one_minus_p_ce(labelled):
    recipe, params, rows = run_recipe(labelled, "cdpo-pairs", ["r1"], {"max_pairs": 2, "chosen_weight": 0.5})
    t = D.build(recipe.kind, rows)
    assert t.num_rows > 0
    verdicts = dict(zip(*(labelled.read("rollouts", "r1").column(c).to_pylist() for c in ("rollout_id", "verdict"))))
    per_prompt = {}
    for r in t.to_pylist():
        assert verdicts[r["chosen_rollout_id"]] == "correct" and verdicts[r["rejected_rollout_id"]] == "incorrect"
        n_prompt = len(r["rejected_input_ids"]) - sum(r["rejected_loss_mask"])
        rej = np.array(r["rejected_weights"])
        assert (rej[:n_prompt] == 0).all()
        assert np.allclose(rej[n_prompt:], np.arange(len(rej) - n_prompt) / 10)  # weight = 1 − p_CE = pos / 10
        ch = np.array(r["chosen_weights"])
        assert np.allclose(ch[np.array(r["chosen_loss_mask"]) == 1], 0.5)
        assert r["prompt"] and r["chosen"] and r["rejected"]  # TRL's columns
        per_prompt[r["prompt"]] = per_prompt.get(r["prompt"], 0) + 1
    assert max(per_prompt.values()) <= 2


def test_dpo_pairs_weigh_every_token_and_carry_dpo_token_rewards(labelled, add_dpo_rewards):
    _, _, rows = run_recipe(labelled, "cdpo-pairs", ["r1"], {"config": "no-such-config"})
    assert rows.num_rows == 0  # cDPO pairs need critical labels on the rejected side
    recipe, _, rows = run_recipe(labelled, "dpo-pairs", ["r1"], {"max_pairs": 2})
    t = D.build(recipe.kind, rows)
    assert t.num_rows > 0 and t.column("chosen_token_rewards").null_count == t.num_rows
    for r in t.to_pylist():
        for side in ("chosen", "rejected"):
            assert r[f"{side}_weights"] == [float(m) for m in r[f"{side}_loss_mask"]]
    cid = add_dpo_rewards(labelled, 0.01)
    assert D.build(recipe.kind, run_recipe(labelled, "dpo-pairs", ["r1"], {"max_pairs": 2})[2]).equals(t)
    t = D.build(recipe.kind, run_recipe(labelled, "dpo-pairs", ["r1"], {"max_pairs": 2, "reward_config": cid})[2])
    for r in t.to_pylist():
        for side in ("chosen", "rejected"):
            mask = np.array(r[f"{side}_loss_mask"], bool)
            rew = np.array(r[f"{side}_token_rewards"])
            assert (rew[~mask] == 0).all() and np.allclose(rew[mask], 0.01 * np.arange(mask.sum()))


def test_weighted_sft_takes_any_label_expression(labelled):
    _, _, rows = run_recipe(labelled, "weighted-sft", ["r1"],
                            {"weight": "coalesce(critical_weight, 0) + grpo", "where": "verdict = 'incorrect'"})
    t = D.build("sequences", rows)
    for r in t.to_pylist():
        mask = np.array(r["loss_mask"], bool)
        w = np.array(r["weights"])
        assert (w[~mask] == 0).all() and np.allclose(w[mask], np.arange(mask.sum()) / 10 + 0.5)
        assert len(r["input_ids"]) == len(r["weights"]) == len(r["loss_mask"])
    with pytest.raises(TokenmillError, match="recipe weighted-sft on run 'r1'"):
        run_recipe(labelled, "weighted-sft", ["r1"], {"weight": "no_such_label"})


def test_a_user_sql_recipe_must_return_the_required_columns(labelled, tmp_path):
    good = tmp_path / "good.sql"
    good.write_text("SELECT rollout_id, prompt_token_ids, completion_token_ids, "
                    "list_transform(completion_token_ids, lambda x: 2.0) AS weights FROM rollouts WHERE run_id = $run")
    recipe, _, rows = run_recipe(labelled, f"sql:{good}", ["r1"])
    assert rows.num_rows == labelled.read("rollouts", "r1").num_rows
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT rollout_id, prompt_token_ids FROM rollouts")
    with pytest.raises(TokenmillError, match="lacks column.*completion_token_ids, weights"):
        run_recipe(labelled, f"sql:{bad}", ["r1"])
    short = tmp_path / "short.sql"
    short.write_text("SELECT rollout_id, prompt_token_ids, completion_token_ids, [1.0] AS weights FROM rollouts WHERE run_id = $run")
    _, _, rows = run_recipe(labelled, f"sql:{short}", ["r1"])
    with pytest.raises(TokenmillError, match="weights has 1 values for"):
        D.build("sequences", rows)
    holey = tmp_path / "holey.sql"  # one weight per token, one of them null (a token without its label)
    holey.write_text("SELECT rollout_id, prompt_token_ids, completion_token_ids, list_transform(completion_token_ids, "
                     "lambda x: CASE WHEN x = completion_token_ids[1] THEN NULL ELSE 1.0 END) AS weights "
                     "FROM rollouts WHERE run_id = $run")
    _, _, rows = run_recipe(labelled, f"sql:{holey}", ["r1"])
    with pytest.raises(TokenmillError, match="weights is null at token 0"):
        D.build("sequences", rows)


def test_manifest_records_lineage_and_identical_curation_writes_nothing(labelled):
    recipe, params, rows = run_recipe(labelled, "weighted-sft", ["r1"])
    t = D.build(recipe.kind, rows)
    m = D.write(labelled, t, recipe=recipe.name, kind=recipe.kind, params=params, runs=["r1"])
    assert m["recipe"] == "weighted-sft" and m["runs"] == ["r1"] and m["params"] == params
    assert m["rows"] == t.num_rows and m["tokens"] == sum(len(x) for x in t.column("input_ids").to_pylist())
    assert m["content_hash"] == D.content_hash(t)
    path = D.local_path(labelled, m["dataset_id"])
    assert json.loads((path / "manifest.json").read_text()) == m
    again = D.write(labelled, t, recipe=recipe.name, kind=recipe.kind, params=params, runs=["r1"])
    assert again == m
    hf = D.hf_dataset(path)
    assert hf.num_rows == t.num_rows and hf[0]["input_ids"] == t.column("input_ids")[0].as_py()


def test_packing_never_trains_a_token_on_another_examples_context(tmp_path):
    import pyarrow.parquet as pq
    import torch

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 40, size=60)
    t = pa.table({"input_ids": [list(rng.integers(1, 100, n)) for n in lengths],
                  "weights": [list(np.ones(n, np.float32)) for n in lengths]})
    pq.write_table(t, tmp_path / "part-00000.parquet")
    blocks = list(D.PackedDataset(tmp_path, seq_len=64, shuffle=True, seed=3))
    seen = 0
    for b in blocks:
        seg, w, pos = b["segment_ids"], b["weights"], b["position_ids"]
        assert b["input_ids"].shape == (64,)
        trained = torch.nonzero(w > 0).squeeze(1)
        assert (trained > 0).all() and (seg[trained - 1] == seg[trained]).all()  # context is its own example
        assert (pos[seg >= 0] == torch.cat([torch.arange(int((seg == s).sum())) for s in seg.unique() if s >= 0])).all()
        seen += int((seg >= 0).sum())
        mask = D.block_causal_mask(seg[None])[0, 0]
        assert not mask[seg[:, None] != seg[None, :]].any()
    assert seen == int(np.minimum(lengths, 64).sum())  # every token placed once


def test_trl_dpo_trainer_trains_on_the_pairs(labelled, tmp_path):
    """The pairs' `prompt` / `chosen` / `rejected` columns are TRL's: its DPOTrainer reads them as they are."""
    from trl import DPOConfig, DPOTrainer

    from tokenmill.engines.hf import load_hf

    r, p, rows = run_recipe(labelled, "cdpo-pairs", ["r1"], {"max_pairs": 1})
    m = D.write(labelled, D.build(r.kind, rows), recipe=r.name, kind=r.kind, params=p, runs=["r1"])
    ds = D.hf_dataset(D.local_path(labelled, m["dataset_id"])).select_columns(["prompt", "chosen", "rejected"])
    model, tok, _ = load_hf("tiny-small", dtype="float32")
    args = DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    out = trainer.train()
    assert out.global_step == 2 and np.isfinite(out.training_loss)


def test_cdpo_pairs_on_a_run_with_two_critical_configs_ask_which_one(labelled):
    crit = labelled.read("critical", "r1")
    first = crit.column("config_id")[0].as_py()
    crit = crit.drop_columns(["run_id"]) if "run_id" in crit.column_names else crit
    other = crit.set_column(crit.schema.get_field_index("config_id"), "config_id",
                            pa.array(["other-config"] * crit.num_rows)).set_column(
        crit.schema.get_field_index("weight"), "weight", pa.array(np.ones(crit.num_rows), pa.float32()))
    _, _, before = run_recipe(labelled, "cdpo-pairs", ["r1"])
    labelled.commit("critical", "r1", other)

    with pytest.raises(TokenmillError, match=r"run 'r1' has 2 critical configs .*other-config") as e:
        run_recipe(labelled, "cdpo-pairs", ["r1"])
    assert "--param config=" in e.value.fix
    _, _, picked = run_recipe(labelled, "cdpo-pairs", ["r1"], {"config": first})
    assert picked.equals(before)  # the original labelling, not a concatenation of both
    _, _, ones = run_recipe(labelled, "cdpo-pairs", ["r1"], {"config": "other-config"})
    assert all(set(w) == {1.0} for w in ones.column("rejected_weights").to_pylist())


def test_weighted_sft_on_a_label_family_with_two_configs_asks_which_one(labelled):
    crit = labelled.read("critical", "r1").drop_columns(["run_id"])
    first = crit.column("config_id")[0].as_py()
    ones = crit.set_column(crit.schema.get_field_index("config_id"), "config_id", pa.array(["other"] * crit.num_rows)) \
        .set_column(crit.schema.get_field_index("weight"), "weight", pa.array(np.ones(crit.num_rows), pa.float32()))
    params = {"weight": "coalesce(critical_weight, 0)", "where": "true"}
    _, _, before = run_recipe(labelled, "weighted-sft", ["r1"], params)
    labelled.commit("critical", "r1", ones)

    with pytest.raises(TokenmillError, match=r"run 'r1' has 2 critical configs .*would average them") as e:
        run_recipe(labelled, "weighted-sft", ["r1"], params)
    assert "--param configs=" in e.value.fix
    _, p, picked = run_recipe(labelled, "weighted-sft", ["r1"], {**params, "configs": first})
    assert picked.column("weights").equals(before.column("weights")) and p["configs"] == first
    _, _, other = run_recipe(labelled, "weighted-sft", ["r1"], {**params, "configs": "other"})
    assert other.column("weights") != before.column("weights")
    # an expression that does not read the family is not asked; nor are defaults changed by the option
    _, p, _ = run_recipe(labelled, "weighted-sft", ["r1"], {"weight": "coalesce(grpo, 0)"})
    assert "configs" not in p
