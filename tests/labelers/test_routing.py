import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tokenmill.config import RoutingConfig
from tokenmill.engines import SamplingParams
from tokenmill.errors import TokenmillError
from tokenmill.sources.worlds import get_world
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.tasks.generate import cached_engine
from tokenmill.labelers.routing.labeler import (DIVERGENT, IDENTICAL, NEUTRAL, UNDECIDABLE, RoutingLabeler,
                                                check_same_tokenizer, cut_after_sentences, mismatches, outcome_verdict,
                                                parse_judge, sentence_end_mask, think_end_mask)


def test_mismatch_rule_on_hand_made_tokens():
    exempt = np.zeros(10, bool)
    exempt[9] = True  # the large model's end of thinking
    large = np.array([1, 2, 3, 4, 9, 5])
    small = np.array([1, 7, 3, 9, 2, 5])
    # pos 1 differs; pos 3 the small model wants </think> where the trajectory goes on: a
    # mismatch (R2R exempts only the trajectory's own end of thinking, pos 4)
    assert mismatches(large, small, exempt).tolist() == [False, True, False, True, False, False]


@pytest.mark.parametrize("reference, candidate, verdict", [
    (1.0, 1.0, 0),   # same outcome from a correct reference: neutral
    (1.0, 0.0, 1),   # the small token breaks a correct answer: divergent
    (0.0, 1.0, 0),   # the small token fixes a wrong answer: not routed
    (0.0, 0.0, -1),  # both wrong: the outcome cannot tell (undecidable)
    (0.5, 0.25, 1),  # partial credit lost: divergent
])
def test_outcome_verdict_means_what_the_judge_means(reference, candidate, verdict):
    assert outcome_verdict(reference, candidate) == verdict


def test_end_of_thinking_is_the_only_exempt_token(hf_small):
    assert not think_end_mask(hf_small.tokenizer).any()  # the tiny models think without a </think> token


def test_sentence_stop_rule_cuts_after_the_second_sentence_end():
    ends = np.zeros(8, bool)
    ends[[5, 6]] = True  # e.g. "\n" and "."
    assert cut_after_sentences(np.array([1, 5, 2, 2, 6, 3, 5]), ends, 2).tolist() == [1, 5, 2, 2, 6]
    assert cut_after_sentences(np.array([1, 5, 2, 2, 6, 3, 5]), ends, 1).tolist() == [1, 5]
    assert cut_after_sentences(np.array([1, 2, 5]), ends, 2).tolist() == [1, 2, 5]  # fewer ends: all of it
    assert cut_after_sentences(np.array([], np.int64), ends, 2).tolist() == []


def test_sentence_ends_of_the_tiny_tokenizer(hf_small):
    tok = hf_small.tokenizer
    ends = sentence_end_mask(tok)
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    digit = tok("7", add_special_tokens=False)["input_ids"]
    assert ends[nl].all() and not ends[digit].any()
    assert ends[tok.convert_tokens_to_ids(".")]


@pytest.mark.parametrize("reply,verdict", [
    ("Output: 1\nReasoning: the method changes", 1),
    ("**Answer (Output: 0)** superficial", 0),
    ("output is 1", 1),
    ("0", 0),
    ("I think it's 1.", 1),
    ("Output: 7", -1),  # not a verdict
    ("the numbers 12 and 13 differ", -1),
    ("", -1),
    ("no idea", -1),
    ("Step 2 shows output 0", 0),  # "output … <d>" wins over the first integer
])
def test_judge_reply_parser(reply, verdict):
    assert parse_judge(reply) == verdict


def test_tokenizer_check_refuses_a_different_vocabulary(hf_small, tmp_path):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(hf_small.model.name_or_path)
    other.add_tokens(["<extra>"])
    check_same_tokenizer(hf_small.tokenizer, cached_engine("hf", "tiny-large").tokenizer, "tiny-small", "tiny-large")
    with pytest.raises(TokenmillError, match="different tokenizers") as e:
        check_same_tokenizer(hf_small.tokenizer, other, "tiny-small", "other")
    assert "same tokenizer" in e.value.fix


def test_labeler_refuses_a_run_whose_large_model_has_another_tokenizer(copy_lake, tmp_path):
    # a real model directory: tiny-small's weights with one token more in its tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenmill.models.registry import resolve_model

    src = resolve_model("tiny-small").path
    other = tmp_path / "other-model"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(other)
    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    lake = Lake(str(copy_lake))
    with pytest.raises(TokenmillError, match="different tokenizers"):
        RoutingLabeler(RoutingConfig(small=str(other))).prepare(lake, "r1")


def _trajectory_table(large_name: str, prompt, completion: list[int], reward: float) -> pa.Table:
    tok = cached_engine("hf", large_name).tokenizer
    return pa.table({"rollout_id": ["t1"], "model": [large_name], "prompt_id": [prompt.prompt_id],
                     "prompt_token_ids": [tok(prompt.prompt)["input_ids"]], "completion_token_ids": [completion],
                     "reward": [reward]})


def test_labels_align_with_the_trajectory_and_flag_the_planted_mismatch():
    # the "large" trajectory is the small model's own greedy output with one digit replaced:
    # before it every position is identical, at it the small model's argmax differs
    small = cached_engine("hf", "tiny-small")
    prompt = get_world("arithmetic").prompts(1, seed=3)[0]
    ids = small.tokenizer(prompt.prompt)["input_ids"]
    greedy = small.generate([ids], SamplingParams(n=1, temperature=0.0, max_tokens=60))[0].token_ids.tolist()
    digits = [i for i, t in enumerate(greedy) if small.tokenizer.decode([t]).isdigit()]
    t = digits[1]
    planted = small.tokenizer.convert_tokens_to_ids("9" if small.tokenizer.decode([greedy[t]]) != "9" else "8")
    traj = greedy[:t] + [planted] + greedy[t + 1:]
    table, feats = RoutingLabeler().label(_trajectory_table("tiny-large", prompt, traj, 0.0), "tiny-large",
                                          {prompt.prompt_id: prompt})
    rows = table.to_pylist()
    assert [r["pos"] for r in rows] == list(range(len(traj)))
    assert [r["large_token_id"] for r in rows] == traj
    assert all(r["label"] == IDENTICAL and not r["is_mismatch"] for r in rows[:t])
    hit = rows[t]
    assert hit["is_mismatch"] and hit["small_token_id"] == greedy[t] and hit["label"] in (NEUTRAL, DIVERGENT)
    assert hit["small_continuation"].startswith(small.tokenizer.decode([greedy[t]]))
    assert hit["large_continuation"].startswith(small.tokenizer.decode([planted]))
    assert hit["small_continuation"].count("\n") <= 2 and hit["verdict_raw"].startswith("reward 0 -> ")
    assert rows[-1]["large_token_id"] == small.tokenizer.eos_token_id and not rows[-1]["is_mismatch"]
    assert all(r["small_continuation"] is None for r in rows if not r["is_mismatch"])
    f = feats.to_pylist()
    assert [r["pred_id"] for r in f] == [r["small_token_id"] for r in rows]
    assert len(f[0]["top_logits"]) == 100 and f[0]["top_logits"][0] >= f[0]["top_logits"][1]
    assert len(f[0]["state"]) == small.model.config.hidden_size


def test_outcome_labels_follow_the_rewards_of_trajectory_and_continuation(route_lake):
    con = connect(Lake(str(route_lake)))
    rows = con.execute("""SELECT label, split_part(verdict_raw, ' ', 2)::DOUBLE, split_part(verdict_raw, ' ', 4)::DOUBLE
                          FROM routing WHERE is_mismatch""").fetchall()
    expected = {1: DIVERGENT, 0: NEUTRAL, -1: UNDECIDABLE}
    assert rows and all(label == expected[outcome_verdict(r, c)] for label, r, c in rows)
    counts = dict(con.execute("SELECT label, count(*) FROM routing GROUP BY label").fetchall())
    assert counts[IDENTICAL] > counts.get(DIVERGENT, 0) > 0
    # features exist for every labelled token
    assert con.execute("SELECT count(*) FROM routing").fetchone() == con.execute("SELECT count(*) FROM router_features").fetchone()


def test_judge_verifier_records_each_reply_and_its_parse(copy_lake):
    # a judge with a short prompt (the tiny models' context is 256 tokens), run for real
    lake = Lake(str(copy_lake))
    cfg = RoutingConfig(small="tiny-small", verifier="judge", judge_model="tiny-large", judge_tokens=8,
                        judge_template="Context: {context}\nA: {reference}\nB: {candidate}\nSame? Output:")
    from tests.conftest import make_run

    make_run(str(copy_lake), run_id="j", models=("tiny-large",), n_prompts=6, samples=1, temperature=0.0)
    labeler = RoutingLabeler(cfg)
    for shard in lake.files("rollouts", "j"):
        labeler.label_shard(lake, "j", shard)
    t = lake.read("routing", "j").filter(pc.field("is_mismatch"))
    assert t.num_rows > 0
    for r in t.to_pylist():
        assert r["verifier"] == "judge" and r["verdict_raw"] is not None
        assert r["verdict"] == parse_judge(r["verdict_raw"])
        assert r["label"] == {1: DIVERGENT, 0: NEUTRAL, -1: UNDECIDABLE}[r["verdict"]]  # unparsable: dropped


def test_a_judge_prompt_longer_than_the_judges_context_is_an_error_not_a_guess(copy_lake):
    from tests.conftest import make_run

    lake = Lake(str(copy_lake))
    make_run(str(copy_lake), run_id="j2", models=("tiny-large",), n_prompts=4, samples=1, temperature=0.0)
    labeler = RoutingLabeler(RoutingConfig(verifier="judge"))  # R2R's full prompt: > 256 tokens
    with pytest.raises(TokenmillError, match="judge prompt is .* tokens") as e:
        for shard in lake.files("rollouts", "j2"):
            labeler.label_shard(lake, "j2", shard)
    assert "--judge-model" in e.value.fix
    assert not lake.files("routing", "j2")  # nothing written


def test_relabelling_writes_nothing_new(route_lake, tmp_path):
    import shutil

    dest = tmp_path / "lake"
    shutil.copytree(route_lake, dest)
    lake = Lake(str(dest))
    before = lake.read("routing", "g").num_rows
    written = [RoutingLabeler().label_shard(lake, "g", s) for s in lake.files("rollouts", "g")]
    assert all(w["routing"] == 0 for w in written)
    assert lake.read("routing", "g").num_rows == before


def test_labels_without_router_features_are_the_same_labels_under_their_own_config(route_lake, tmp_path):
    import shutil

    dest = tmp_path / "lake"
    shutil.copytree(route_lake, dest)
    lake = Lake(str(dest))
    on, off = RoutingLabeler(), RoutingLabeler(RoutingConfig(features=False))
    assert "features" not in on.params() and off.params()["features"] is False  # old ids kept; other work, other id
    features_before = lake.read("router_features", "g").num_rows
    written = [off.label_shard(lake, "g", s) for s in lake.files("rollouts", "g")]
    assert sum(w["routing"] for w in written) > 0 and all(w["router_features"] == 0 for w in written)
    assert lake.read("router_features", "g").num_rows == features_before
    con = connect(lake)
    per_config = con.execute("SELECT config_id, list(label ORDER BY rollout_id, pos), list(small_token_id ORDER BY "
                             "rollout_id, pos) FROM routing GROUP BY config_id").fetchall()
    assert len(per_config) == 2 and per_config[0][1:] == per_config[1][1:]  # argmax alone: the same classes
