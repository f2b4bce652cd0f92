"""The score stage against per-rollout HF forwards, and its idempotence."""

import numpy as np
import pyarrow.compute as pc
import torch

from tokenmill.engines.hf import load_hf
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.tasks import score


def naive_logprobs(model, prompt_ids, completion_ids):
    """One plain HF forward per rollout: what a simple labelling script does."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    start = len(prompt_ids)
    pred = logp[start - 1 : -1]
    tgt = torch.tensor(completion_ids)
    ent = -(pred.exp() * pred).sum(-1)
    return pred.gather(-1, tgt[:, None])[:, 0].numpy(), ent.numpy(), pred.argmax(-1).numpy()


def test_batched_scores_equal_one_forward_per_rollout(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    written = score.score_shard(lake, "r1", shard, {"ref": "tiny-large", "policy": "policy"}, top_k=3)
    rollouts = lake.read("rollouts", "r1")
    assert written == {"ref": pc.sum(rollouts.column("num_tokens")).as_py(),
                       "policy": pc.sum(rollouts.column("num_tokens")).as_py()}
    scores = lake.read("scores", "r1").sort_by([("model", "ascending"), ("rollout_id", "ascending"), ("pos", "ascending")])
    model, _, _ = load_hf("tiny-large")
    for row in rollouts.sort_by("rollout_id").slice(0, 6).to_pylist():
        want_lp, want_ent, want_top = naive_logprobs(model, row["prompt_token_ids"], row["completion_token_ids"])
        got = scores.filter(pc.and_(pc.equal(scores.column("model"), "ref"),
                                    pc.equal(scores.column("rollout_id"), row["rollout_id"])))
        assert got.column("pos").to_pylist() == list(range(row["num_tokens"]))
        assert got.column("token_id").to_pylist() == row["completion_token_ids"]
        np.testing.assert_allclose(got.column("logprob").to_numpy(), want_lp, atol=1e-4)
        np.testing.assert_allclose(got.column("entropy").to_numpy(), want_ent, atol=1e-4)
        assert got.column("top1_id").to_pylist() == want_top.tolist()
        assert set(got.column("model_id").to_pylist()) == {"tiny-large"}
    # the policy role is the rollout's own model: its scores equal the generation logprobs
    con = connect(lake)
    diff = con.execute("""SELECT max(abs(s.logprob - t.logprob)) FROM scores s JOIN tokens t USING (rollout_id, pos)
                          WHERE s.model = 'policy'""").fetchone()[0]
    assert diff < 1e-3
    assert con.execute("SELECT DISTINCT model_id FROM scores WHERE model = 'policy'").fetchall() == [("tiny-small",)]


def test_rescoring_writes_nothing_new(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    first = score.score_shard(lake, "r1", shard, {"ref": "tiny-large"})
    again = score.score_shard(lake, "r1", shard, {"ref": "tiny-large"})
    assert first["ref"] > 0 and again == {"ref": 0}
    assert lake.read("scores", "r1").num_rows == first["ref"]


def test_only_missing_rollouts_are_scored(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    incorrect = pc.field("verdict") != "correct"
    part = score.score_shard(lake, "r1", shard, {"ref": "tiny-large"}, where=incorrect)
    rest = score.score_shard(lake, "r1", shard, {"ref": "tiny-large"})
    total = pc.sum(lake.read("rollouts", "r1").column("num_tokens")).as_py()
    assert part["ref"] + rest["ref"] == total
    assert lake.read("scores", "r1").num_rows == total


def test_hidden_states_are_float16_rows_keyed_by_rollout_and_pos(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    score.score_shard(lake, "r1", shard, {"large": "tiny-large"}, hidden_layer=2)
    hidden = lake.read("hidden_states", "r1")
    assert str(hidden.schema.field("hidden").type) == "list<item: halffloat>"
    assert hidden.num_rows == lake.read("scores", "r1").num_rows
    assert set(pc.list_value_length(hidden.column("hidden")).to_pylist()) == {128}  # tiny-large's width
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM hidden_states WHERE layer = 2").fetchone()[0] == hidden.num_rows


def test_a_role_filled_by_another_model_keeps_both_models_hidden_states(copy_lake):
    # the `scores` rule (a role refilled by another model keeps both) holds for hidden states too
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    score.score_shard(lake, "r1", shard, {"ref": "tiny-small"}, hidden_layer=1)
    score.score_shard(lake, "r1", shard, {"ref": "tiny-large"}, hidden_layer=1)
    con = connect(lake)
    got = dict(con.execute("SELECT model_id, count(*) FROM hidden_states WHERE model = 'ref' GROUP BY 1").fetchall())
    n = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
    assert got == {"tiny-small": n, "tiny-large": n}
    widths = dict(con.execute("SELECT model_id, max(len(hidden)) FROM hidden_states GROUP BY 1").fetchall())
    assert widths["tiny-large"] == 128 and widths["tiny-small"] != 128
