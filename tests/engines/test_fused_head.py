"""The fused, vocabulary-chunked head equals the full-vocabulary path (`token_stats`) on CPU."""

import math

import pytest
import torch

from tokenmill.engines.base import token_stats
from tokenmill.engines.fused_head import fused_head_stats


def _case(n=37, d=24, vocab=1000, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    w = torch.randn(vocab, d, generator=g) * scale / math.sqrt(d)
    targets = torch.randint(0, vocab, (n,), generator=g)
    return h, w, targets


@pytest.mark.parametrize("chunk", [1000, 256, 333, 7])  # one chunk, even chunks, a ragged last chunk, tiny chunks
def test_fused_head_matches_the_full_vocabulary_statistics(chunk):
    h, w, y = _case()
    bias = torch.linspace(-1, 1, w.shape[0])
    want = token_stats(h @ w.t() + bias, y, top_k=5)
    got = fused_head_stats(h, w, bias, y, top_k=5, vocab_chunk=chunk)
    for name, a, b in zip(("logprob", "entropy", "top ids", "top logprobs"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name == "top ids":
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5, msg=name)


def test_entropy_is_exact_on_cases_worked_by_hand():
    # two tokens equally likely: H = log 2; a uniform row over 4: log 4; one certain token: 0
    w = torch.eye(4)
    h = torch.tensor([[5.0, 5.0, -1e4, -1e4], [0.0, 0.0, 0.0, 0.0], [60.0, 0.0, 0.0, 0.0]])
    lp, ent, ids, top = fused_head_stats(h, w, None, torch.tensor([0, 3, 0]), top_k=2, vocab_chunk=1)
    torch.testing.assert_close(ent, torch.tensor([math.log(2), math.log(4), 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(lp, torch.tensor([-math.log(2), -math.log(4), 0.0]), atol=1e-5, rtol=0)
    assert ids[0].tolist() == [0, 1] and ids[2, 0] == 0


def test_large_logits_and_masked_vocabulary_keep_the_entropy_finite():
    h, w, y = _case(scale=60.0)  # logits in the hundreds: log Z − E[z] would cancel, log s − t/s does not
    want = token_stats(h @ w.t(), y, top_k=3)
    got = fused_head_stats(h, w, None, y, top_k=3, vocab_chunk=128)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-4)
    bias = torch.zeros(w.shape[0])
    bias[:500] = float("-inf")  # a masked half, and a first chunk entirely −inf
    want = token_stats(h @ w.t() + bias, (y % 500) + 500, top_k=3)
    got = fused_head_stats(h, w, bias, (y % 500) + 500, top_k=3, vocab_chunk=128)
    assert torch.isfinite(got[1]).all()
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-4)


def test_without_entropy_or_top_k():
    h, w, y = _case(n=5)
    lp, ent, ids, top = fused_head_stats(h, w, None, y, top_k=0, entropy=False, vocab_chunk=100)
    assert ent is None and ids.shape == (5, 0) and top.shape == (5, 0)
    torch.testing.assert_close(lp, torch.log_softmax(h @ w.t(), -1).gather(1, y[:, None]).squeeze(1))


def test_the_hf_engine_scores_the_same_with_the_fused_head():
    import numpy as np

    from tokenmill.engines.hf import HFEngine
    from tokenmill.errors import EngineError
    from tokenmill.sources.worlds import get_world

    rows = HFEngine("tiny-small")
    fused = HFEngine("tiny-small", head="fused")
    prompts = [rows.tokenizer(p.prompt)["input_ids"] for p in get_world("arithmetic").prompts(6)]
    g = torch.Generator().manual_seed(0)
    comps = [torch.randint(3, 1000, (int(n),), generator=g).tolist() for n in torch.randint(1, 40, (6,), generator=g)]
    for a, b in zip(rows.score(prompts, comps, top_k=5), fused.score(prompts, comps, top_k=5)):
        np.testing.assert_allclose(b.logprobs, a.logprobs, atol=2e-5)
        np.testing.assert_allclose(b.entropy, a.entropy, atol=2e-5)
        np.testing.assert_array_equal(b.topk_ids, a.topk_ids)
    with pytest.raises(EngineError, match="unknown head"):
        HFEngine("tiny-small", head="nope")
