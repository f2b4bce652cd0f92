import numpy as np

from tokenmill.engines import SamplingParams
from tokenmill.sources.worlds import get_world
from tokenmill.tasks.generate import cached_engine
from tokenmill.tasks.train.routed import always, at_random, never, routed_generate


def _prompts(n=6):
    small = cached_engine("hf", "tiny-small")
    return [small.tokenizer(p.prompt)["input_ids"] for p in get_world("arithmetic").prompts(n, seed=5)]


def test_never_routing_is_the_small_models_greedy_output_and_always_the_large_models():
    small, large = cached_engine("hf", "tiny-small"), cached_engine("hf", "tiny-large")
    prompts = _prompts()
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=60)
    for engine, decide in ((small, never), (large, always)):
        want = [g.token_ids.tolist() for g in engine.generate(prompts, greedy)]
        got = routed_generate(small, large, prompts, decide, max_tokens=60, batch_size=4)
        assert [r.token_ids.tolist() for r in got] == want
        assert all(r.from_large.all() == (decide is always) and r.from_large.any() == (decide is always) for r in got)


def test_random_routing_hands_about_its_share_to_the_large_model():
    small, large = cached_engine("hf", "tiny-small"), cached_engine("hf", "tiny-large")
    got = routed_generate(small, large, _prompts(16), at_random(0.3, seed=1), max_tokens=60)
    share = np.concatenate([r.from_large for r in got]).mean()
    assert 0.2 < share < 0.4
    assert all(r.token_ids[-1] == small.tokenizer.eos_token_id or len(r.token_ids) == 60 for r in got)
