"""The contrast models as the cDPO authors train them: their defaults, their data selection
(by hand), and a labelling with them whose p_CE does not saturate."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors import safe_open

from tokenmill.config import ContrastTrainConfig, CriticalConfig
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.labelers.critical.labeler import CriticalLabeler, contrastive_p_ce, select_training_rollouts


def test_the_default_recipe_is_the_authors():
    # Critical-Tokens-Matter src/configs/train_config.py:27-47, src/train/train_sft.py:52-84
    t = CriticalConfig().train
    assert (t.method, t.lr, t.epochs, t.steps, t.batch, t.warmup_steps, t.schedule) == ("lora", 3e-4, 1, None, 6, 100, "cosine")
    assert (t.lora_r, t.lora_alpha, t.lora_dropout, t.lora_targets) == (8, 16, 0.1, ["gate_proj", "up_proj", "down_proj"])
    assert (t.data, t.save_dtype) == ("cdpo", "bfloat16") and CriticalConfig().beta == 1.0  # pipeline.py:228
    tiny = CriticalConfig(train="tiny").train
    assert (tiny.method, tiny.lr, tiny.steps, tiny.batch, tiny.data, tiny.save_dtype) == ("full", 5e-4, 150, 16, "all", "float32")
    # the flat spellings still work, over the named recipe
    assert CriticalConfig(train="tiny", train_steps=20).train.steps == 20
    assert CriticalConfig(train_lr=1e-4, train_batch=2).train.model_dump() == ContrastTrainConfig(lr=1e-4, batch=2).model_dump()
    with pytest.raises(TokenmillError, match="unknown contrast-model recipe 'big'"):
        CriticalConfig(train="big")
    cfg = CriticalConfig(train="tiny", logits_memory_mb=64)
    assert CriticalConfig.model_validate_json(cfg.model_dump_json()) == cfg  # as a Prefect parameter


def test_p_ce_on_logits_equals_p_ce_on_log_probs():
    # the authors combine raw logits (pipeline.py:228-229: softmax(2·z_pos − z_neg)); log p = z −
    # logsumexp(z) shifts each row by a constant, which the softmax removes
    g = torch.Generator().manual_seed(1)
    z_pos, z_neg = torch.randn(6, 40, generator=g) * 4, torch.randn(6, 40, generator=g) * 4
    y = torch.tensor([0, 5, 9, 13, 21, 39])
    authors = torch.softmax((1 + 1) * z_pos - 1 * z_neg, -1).gather(-1, y[:, None])[:, 0]
    ours = contrastive_p_ce(torch.log_softmax(z_pos, -1), torch.log_softmax(z_neg, -1), y, 1.0)
    torch.testing.assert_close(ours, authors, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(contrastive_p_ce(z_pos, z_neg, y, 1.0), authors, rtol=1e-5, atol=1e-8)


def _rollouts(spec):
    """[(prompt, verdict, answer, count)] → a rollouts-like table, one row per rollout."""
    rows = [(p, v, a) for p, v, a, n in spec for _ in range(n)]
    return pa.table({"rollout_id": [f"r{i:02d}" for i in range(len(rows))], "prompt_id": [p for p, _, _ in rows],
                     "verdict": [v for _, v, _ in rows],
                     "verify_detail": [json.dumps({"answer": a}) for _, _, a in rows]})


def test_the_authors_selection_by_hand():
    table = _rollouts([
        # prompt A: 3 correct; 7 incorrect: 40 ×3, 41 ×2, 42, 43 → need ⌈7/2⌉ = 4: take 40 (first,
        # need 4 → 1), then 41 (given twice, need 1 → −1), done: 42 and 43 never
        ("A", "correct", 10, 3), ("A", "incorrect", 40, 3), ("A", "incorrect", 41, 2), ("A", "incorrect", 42, 1),
        ("A", "incorrect", 43, 1),
        # prompt B: 2 incorrect, each once → need 1: the first answer (a random one of the tie)
        ("B", "incorrect", 50, 1), ("B", "incorrect", 51, 1),
        # prompt C: 1 incorrect 60, 1 incorrect 61 given once, 62 given twice → need 2: 62 first
        # (most frequent, need 2 → 0), done
        ("C", "incorrect", 62, 2), ("C", "incorrect", 60, 1), ("C", "incorrect", 61, 1), ("C", "correct", 7, 1),
    ])
    answers = lambda t: sorted(zip(t.column("prompt_id").to_pylist(),  # noqa: E731
                                   [json.loads(d)["answer"] for d in t.column("verify_detail").to_pylist()]))
    for seed in range(5):
        pos = select_training_rollouts(table, "correct", "cdpo", seed)
        neg = select_training_rollouts(table, "incorrect", "cdpo", seed)
        assert answers(pos) == [("A", 10), ("C", 7)]  # one correct rollout per prompt
        got = answers(neg)
        assert got[:2] == [("A", 40), ("A", 41)] and got[2][0] == "B" and got[2][1] in (50, 51) and got[3:] == [("C", 62)]
    ids = [select_training_rollouts(table, "incorrect", "cdpo", s).column("rollout_id").to_pylist() for s in (0, 0)]
    assert ids[0] == ids[1]  # seeded
    assert select_training_rollouts(table, "incorrect", "all").num_rows == 13


def test_contrast_models_by_the_authors_recipe(copy_lake):
    lake = Lake(copy_lake)
    labeler = CriticalLabeler(CriticalConfig(top_k=2))  # every default: LoRA, one epoch, their selection
    models = labeler.prepare(lake, "r1")
    for shard in lake.files("rollouts", "r1"):
        labeler.label_shard(lake, "r1", shard)
    con = connect(lake)
    correct_prompts = con.execute("SELECT count(DISTINCT prompt_id) FROM rollouts WHERE verdict = 'correct'").fetchone()[0]
    neg_expected = select_training_rollouts(lake.read("rollouts", "r1"), "incorrect", "cdpo", 0).num_rows
    arts = {a["role"]: a for a in lake.read("model_artifacts", "r1").to_pylist()}
    assert arts["pos"]["train_rollouts"] == correct_prompts and arts["neg"]["train_rollouts"] == neg_expected
    for role, art in arts.items():
        assert art["steps"] == -(-art["train_rollouts"] // 6)  # one epoch of batches of 6
        lineage = json.loads(art["lineage"])
        assert lineage["train"]["method"] == "lora" and lineage["train"]["save_dtype"] == "bfloat16"
        with safe_open(f"{models['tiny-small', 'arithmetic'][role]}/model.safetensors", "pt") as f:  # merged, bf16
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
            assert not any("lora" in k for k in f.keys())
    # one epoch of adapters with warm-up keeps both models near the policy: p_CE stays near the
    # policy's own probability of each sampled token and does not pile up at 0
    p, own = np.array(con.execute("""SELECT c.p_ce, exp(t.logprob) FROM critical c
                                     JOIN tokens t USING (rollout_id, pos)""").fetchall()).T
    assert len(p) > 0 and (p < 1e-6).mean() == 0
    assert np.abs(p - own).mean() < 0.02
