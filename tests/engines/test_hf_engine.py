import math

import numpy as np
import pytest
import torch

from tokenmill.engines import SamplingParams, get_engine
from tokenmill.engines.base import token_stats
from tokenmill.errors import EngineError
from tokenmill.sources.worlds import get_world


def test_token_stats_matches_hand_computation():
    # logits [0, ln 3] → p = [1/4, 3/4]; token 1: logprob ln(3/4);
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    lp, ent, top_ids, top_lp = token_stats(logits, torch.tensor([1]), top_k=2)
    assert lp.item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    assert top_ids.tolist() == [[1, 0]]
    assert top_lp[0, 1].item() == pytest.approx(math.log(0.25), abs=1e-6)


def test_token_stats_entropy_handles_zero_probability():
    logits = torch.tensor([[0.0, -float("inf"), 0.0]])
    _, ent, _, _ = token_stats(logits, torch.tensor([0]), top_k=1)
    assert ent.item() == pytest.approx(math.log(2), abs=1e-6)


def test_generate_returns_n_samples_per_prompt_in_order(hf_small):
    prompts = [p.prompt for p in get_world("arithmetic").prompts(5)]
    gens = hf_small.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=40, seed=7, logprobs=4))
    assert [(g.prompt_index, g.sample_index) for g in gens] == [(p, s) for p in range(5) for s in range(3)]
    for g in gens:
        t = len(g.token_ids)
        assert g.logprobs.shape == (t,) and g.entropy.shape == (t,)
        assert g.topk_ids.shape == (t, 4) and g.topk_logprobs.shape == (t, 4)
        assert np.all(g.logprobs <= 0) and np.all(g.entropy >= 0)
        # the top-1 alternative is at least as likely as the sampled token
        assert np.all(g.topk_logprobs[:, 0] >= g.logprobs - 1e-5)
        eos = hf_small.tokenizer.eos_token_id
        assert (g.finish_reason == "stop") == (g.token_ids[-1] == eos)
        assert eos not in g.token_ids[:-1]


def test_same_seed_gives_same_samples(hf_small):
    prompts = [p.prompt for p in get_world("bios").prompts(4, split="all")]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=40, seed=3)
    a, b = hf_small.generate(prompts, params), hf_small.generate(prompts, params)
    assert all(np.array_equal(x.token_ids, y.token_ids) for x, y in zip(a, b))


def test_generation_logprobs_equal_teacher_forced_scores(hf_small):
    prompts = [p.prompt for p in get_world("code").prompts(6)]
    gens = hf_small.generate(prompts, SamplingParams(n=2, temperature=1.0, max_tokens=48, seed=1))
    scored = hf_small.score([g.prompt_token_ids for g in gens], [g.token_ids for g in gens], top_k=5, hidden_layer=-1)
    for g, s in zip(gens, scored):
        np.testing.assert_allclose(s.logprobs, g.logprobs, atol=1e-4)
        np.testing.assert_allclose(s.entropy, g.entropy, atol=1e-4)
        assert s.hidden.shape == (len(g.token_ids), hf_small.model.config.hidden_size)


def test_score_of_batch_equals_score_of_each_alone(hf_small):
    prompts = [p.prompt for p in get_world("arithmetic").prompts(4)]
    gens = hf_small.generate(prompts, SamplingParams(n=1, temperature=1.0, max_tokens=40, seed=2))
    together = hf_small.score([g.prompt_token_ids for g in gens], [g.token_ids for g in gens])
    for g, s in zip(gens, together):
        alone = hf_small.score([g.prompt_token_ids], [g.token_ids])[0]
        np.testing.assert_allclose(s.logprobs, alone.logprobs, atol=1e-5)


def test_score_refuses_sequences_longer_than_the_context(hf_small):
    limit = hf_small.model.config.max_position_embeddings
    with pytest.raises(EngineError, match="more than the model"):
        hf_small.score([[1] * 10], [[5] * limit])


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="no model at") as e:
        get_engine("hf", str(tmp_path / "nope"))
    assert "known model: tiny-small" in str(e.value)


def test_chunked_lm_head_gives_the_same_scores(hf_small, monkeypatch):
    import tokenmill.engines.hf as hf

    gens = hf_small.generate([p.prompt for p in get_world("bios").prompts(3, split="all")],
                             SamplingParams(n=2, temperature=1.0, max_tokens=40, seed=4))
    args = ([g.prompt_token_ids for g in gens], [g.token_ids for g in gens])
    whole = hf_small.score(*args)
    monkeypatch.setattr(hf, "LOGITS_CHUNK", 7)  # chunk edges fall inside sequences
    # other chunk shapes are other GEMM blockings: float32 logits of magnitude ~10 may round a
    # few ulps (~1e-6 each) apart, so log-softmax values agree to ~1e-5, not bit for bit
    for a, b in zip(whole, hf_small.score(*args)):
        np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-5)
        np.testing.assert_allclose(a.entropy, b.entropy, atol=2e-5)


def test_generate_from_token_ids_continues_the_exact_prefix(hf_small):
    prompt = get_world("arithmetic").prompts(1)[0].prompt
    ids = hf_small.tokenizer([prompt])["input_ids"][0]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=20, seed=3)
    from_text = hf_small.generate([prompt], params)
    from_ids = hf_small.generate([ids], params)
    assert from_ids[0].prompt_token_ids == ids
    for a, b in zip(from_text, from_ids):
        assert a.token_ids.tolist() == b.token_ids.tolist()


def test_full_logprobs_agree_with_score(hf_small):
    world = get_world("arithmetic")
    prompts = [p.prompt for p in world.prompts(3)]
    gens = hf_small.generate(prompts, SamplingParams(n=1, temperature=1.0, max_tokens=25, seed=1))
    p_ids = [g.prompt_token_ids for g in gens]
    c_ids = [g.token_ids for g in gens]
    logp, targets, lengths = hf_small.full_logprobs(p_ids, c_ids)
    assert lengths == [len(c) for c in c_ids]
    assert logp.shape == (sum(lengths), len(hf_small.tokenizer))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(sum(lengths)), atol=1e-4)
    chosen = logp.gather(-1, targets.long()[:, None])[:, 0].numpy()
    scored = np.concatenate([s.logprobs for s in hf_small.score(p_ids, c_ids)])
    np.testing.assert_allclose(chosen, scored, atol=1e-4)


def test_shared_prompt_prefix_gives_the_same_scores_as_whole_sequences(hf_small, monkeypatch):
    # prompts of different lengths, 3 samples each, one empty completion, and a budget so
    # small that groups split across batches: every case of the shared-prefix path
    prompts = [p.prompt for p in get_world("arithmetic").prompts(3)]
    gens = hf_small.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=30, seed=4))
    p_ids = [g.prompt_token_ids for g in gens]
    c_ids = [list(g.token_ids) for g in gens]
    c_ids[4] = []
    assert len({len(p) for p in p_ids}) > 1
    shared = hf_small.score(p_ids, c_ids, hidden_layer=1)
    monkeypatch.setattr(hf_small, "token_budget", 100)
    split = hf_small.score(p_ids, c_ids, hidden_layer=1)
    alone = [hf_small.score([p], [c], hidden_layer=1)[0] for p, c in zip(p_ids, c_ids)]  # one prompt: joint pass
    for a, b, c in zip(shared, split, alone):
        for got in (a, b):
            np.testing.assert_allclose(got.logprobs, c.logprobs, atol=1e-5)
            np.testing.assert_allclose(got.entropy, c.entropy, atol=1e-5)
            np.testing.assert_allclose(got.hidden, c.hidden, atol=1e-4)
            np.testing.assert_array_equal(got.topk_ids, c.topk_ids)
    assert len(shared[4].logprobs) == 0


def test_scoring_buckets_cover_every_rollout_once_within_the_budget():
    import random

    from tokenmill.engines.hf import _batch_cost, _segment_tokens, _shared_prefix_buckets

    rng = random.Random(0)
    prompts = [[rng.randrange(3, 900) for _ in range(rng.randrange(5, 60))] for _ in range(9)]
    p_ids = [prompts[i % 9] for i in range(60)]
    c_ids = [[7] * rng.randrange(0, 200) for _ in range(60)]
    for budget in (300, 2000, 50_000):
        batches = _shared_prefix_buckets(p_ids, c_ids, budget)
        assert sorted(i for b in batches for i in b) == list(range(60))
        costs = []
        for b in batches:
            lengths = [len(c_ids[i]) for i in b]
            cost = _batch_cost(len(b), len({tuple(p_ids[i]) for i in b}), max(len(p_ids[i]) for i in b),
                               _segment_tokens(lengths), max(len(p_ids[i]) + len(c_ids[i]) for i in b))
            assert cost <= budget or len(b) == 1
            costs.append(cost)
        # never worse than running every rollout alone, each with its own batch overhead
        alone = sum(len(p) + len(c) for p, c in zip(p_ids, c_ids)) + 60 * budget / 8
        assert sum(costs) + len(batches) * budget / 8 <= alone


def test_segmented_completions_score_as_whole_sequences(hf_small, monkeypatch):
    # many samples of two prompts, completions of very different lengths: the shared-prefix
    # pass runs them in several segments, rows leaving the batch as their completions end
    import tokenmill.engines.hf as hf

    prompts = [p.prompt for p in get_world("bios").prompts(2, split="all")]
    gens = hf_small.generate(prompts, SamplingParams(n=6, temperature=1.0, max_tokens=90, seed=5))
    p_ids = [g.prompt_token_ids for g in gens]
    c_ids = [list(g.token_ids)[: 5 + 15 * i] for i, g in enumerate(gens)]
    assert hf._segment(max(map(len, c_ids))) < max(map(len, c_ids))  # more than one segment
    def no_joint_pass(*_):
        raise AssertionError("these rollouts share prompts: the shared-prefix pass should run them")

    monkeypatch.setattr(hf.HFEngine, "_joint_states", no_joint_pass)
    shared = hf_small.score(p_ids, c_ids, hidden_layer=1)
    monkeypatch.undo()
    alone = [hf_small.score([p], [c], hidden_layer=1)[0] for p, c in zip(p_ids, c_ids)]
    for got, want in zip(shared, alone):
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
        np.testing.assert_allclose(got.entropy, want.entropy, atol=1e-5)
        np.testing.assert_allclose(got.hidden, want.hidden, atol=1e-4)
