"""cDPO's full-vocabulary pass under a memory budget: how many tokens a chunk may hold at
real vocabularies, chunked results equal to unchunked ones, and a measured peak."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tokenmill.engines.hf import HEAD_COPIES, _over_head_chunks, logits_rows
from tokenmill.errors import EngineError
from tokenmill.storage.lake import Lake
from tokenmill.tasks.generate import cached_engine
from tokenmill.labelers.critical.labeler import LIVE_COPIES, contrast_pass, contrastive_p_ce, p_ce_rows

MIB = 2**20


@pytest.mark.parametrize("vocab", [49_152, 152_064])  # SmolLM2, Qwen2.5
@pytest.mark.parametrize("memory_mb", [64, 512, 4096])
def test_p_ce_chunks_fill_but_never_exceed_the_budget(vocab, memory_mb):
    rows = p_ce_rows(vocab, memory_mb)
    per_token = vocab * 4 * LIVE_COPIES  # float32, log p_pos + log p_neg + one temporary
    assert rows * per_token <= memory_mb * MIB < (rows + 1) * per_token
    head = logits_rows(vocab, memory_mb, HEAD_COPIES)  # the scoring stage's LM-head chunks
    assert head * vocab * 4 * HEAD_COPIES <= memory_mb * MIB < (head + 1) * vocab * 4 * HEAD_COPIES


def test_p_ce_chunk_sizes_at_the_default_budget():
    # 512 MiB / (49,152 × 4 B × 3) = 910.2; / (152,064 × 4 × 3) = 294.2. The old fixed 4,096
    # tokens held 4096 × 49,152 × 4 B = 768 MiB per copy.
    assert (p_ce_rows(49_152, 512), p_ce_rows(152_064, 512)) == (910, 294)
    assert p_ce_rows(152_064, 0.001) == 1  # a budget below one token still makes progress


def test_p_ce_by_chunks_equals_one_pass_and_in_place_equals_copying():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(50, 300, generator=g) * 3, -1)
    lq = torch.log_softmax(torch.randn(50, 300, generator=g) * 3, -1)
    y = torch.randint(0, 300, (50,), generator=g)
    whole = contrastive_p_ce(lp, lq, y, 1.0)
    chunks = torch.cat([contrastive_p_ce(lp[i : i + 7].clone(), lq[i : i + 7], y[i : i + 7], 1.0, inplace=True)
                        for i in range(0, 50, 7)])
    torch.testing.assert_close(chunks, whole, rtol=1e-6, atol=0)
    reference = torch.log_softmax(2 * lp - lq, -1).gather(-1, y[:, None])[:, 0].exp()  # the textbook form
    torch.testing.assert_close(whole, reference, rtol=1e-5, atol=1e-7)


def _lake_rollouts(arith_lake, n=None):
    rows = Lake(str(arith_lake)).read("rollouts", "r1", columns=["prompt_token_ids", "completion_token_ids"])
    prompts = rows.column("prompt_token_ids").to_pylist()[:n]
    completions = [np.asarray(c, np.int32) for c in rows.column("completion_token_ids").to_pylist()[:n]]
    return prompts, completions


def test_identical_contrast_models_give_the_models_own_probability(arith_lake, hf_small):
    # p_pos = p_neg = p: s = (1+β)·log p − β·log p = log p, so p_CE(y_t) = p(y_t) for every β,
    # whatever the chunking: compare with the scoring stage's logprobs
    prompts, completions = _lake_rollouts(arith_lake)
    own = np.exp(np.concatenate([s.logprobs for s in hf_small.score(prompts, completions)]))
    for beta, memory_mb in ((1.0, 512), (0.5, 0.05)):  # 0.05 MiB: 4 tokens per chunk
        p, stats = contrast_pass(hf_small, hf_small, prompts, completions, beta, memory_mb)
        np.testing.assert_allclose(p, own, rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(np.exp(np.concatenate([s.logprobs for s in stats["neg"]])), own, rtol=2e-5)


def test_a_small_budget_gives_smaller_chunks_and_the_same_labels(arith_lake, hf_small, monkeypatch):
    prompts, completions = _lake_rollouts(arith_lake)
    large = cached_engine("hf", "tiny-large")  # same tokenizer, other weights: a real contrast
    seen = []

    def recording(engine):
        real = engine.head_logprobs

        def head_logprobs(h):
            seen.append(h.shape[0])
            return real(h)
        return head_logprobs

    big_p, big_stats = contrast_pass(hf_small, large, prompts, completions, 1.0, 512)
    for engine in (hf_small, large):
        monkeypatch.setattr(engine, "head_logprobs", recording(engine))
    budget = 7 * 1024 * 4 * LIVE_COPIES / MIB  # exactly 7 tokens of a 1,024-token vocabulary
    small_p, small_stats = contrast_pass(hf_small, large, prompts, completions, 1.0, budget)
    n = sum(len(c) for c in completions)
    assert max(seen) == 7 and sum(seen) == 2 * n and len(seen) >= 2 * (n // 7)
    # 7-token chunks are other GEMM shapes: float32 logits round a few ulps apart, which p_CE
    # (a ratio of exponentials) carries as ~1e-5 relative differences
    np.testing.assert_allclose(small_p, big_p, rtol=1e-4, atol=1e-6)
    assert 0 < small_p.min() and small_p.max() <= 1
    for role in ("pos", "neg"):
        for a, b in zip(big_stats[role], small_stats[role]):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
            np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5)
            np.testing.assert_array_equal(a.topk_ids, b.topk_ids)


def test_full_logprobs_stays_within_its_budget(arith_lake, hf_small):
    prompts, completions = _lake_rollouts(arith_lake, 4)
    n = sum(len(c) for c in completions)
    whole, targets, lengths = hf_small.full_logprobs(prompts, completions, memory_mb=None)
    assert whole.shape == (n, 1024) and lengths == [len(c) for c in completions]
    fits = 2 * n * 1024 * 4 / MIB  # the result takes half the budget
    chunked, _, _ = hf_small.full_logprobs(prompts, completions, memory_mb=fits)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    with pytest.raises(EngineError, match=r"full_logprobs: \d+ tokens × 1024 vocabulary .* over half the"):
        hf_small.full_logprobs(prompts, completions, memory_mb=fits / 2)


def test_the_scoring_head_chunks_follow_the_budget(hf_small):
    head = hf_small.model.get_output_embeddings()
    h = torch.randn(100, head.in_features)
    budget = 9 * 1024 * 4 * HEAD_COPIES / MIB  # 9 tokens
    with torch.no_grad():
        parts = _over_head_chunks(h, lambda logits, rows: logits, head, memory_mb=budget)
        assert [p.shape[0] for p in parts] == [9] * 11 + [1]
        torch.testing.assert_close(torch.cat(parts), head(h))


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from tokenmill.engines import get_engine
    from tokenmill.labelers.critical.labeler import contrast_pass

    path, budget = sys.argv[1], float(sys.argv[2])
    engine = get_engine("hf", path)
    rng = np.random.default_rng(0)
    prompts = [[1, 5 + i, 9] for i in range(6)]
    completions = [rng.integers(3, 1000, 256).astype(np.int32) for _ in prompts]  # 1,536 tokens
    contrast_pass(engine, engine, prompts[:1], [completions[0][:4]], 1.0, budget)  # warm up
    # ru_maxrss counts the parent's RSS at fork (a large pytest): reset the high-water mark
    def hwm_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
    open("/proc/self/clear_refs", "w").write("5")
    before = hwm_kib()
    p, _ = contrast_pass(engine, engine, prompts, completions, 1.0, budget)
    print(json.dumps({"extra": (hwm_kib() - before) / 1024, "tokens": len(p)}))
""")


def test_measured_peak_at_a_152k_vocabulary_stays_near_the_budget(tmp_path):
    # a real (random) Llama with Qwen2.5's vocabulary: one [1536, 152064] float32 copy would be
    # 891 MiB, the six the old code kept at once ~5 GiB; with a budget the pass stays close to
    # it (peak RSS over the pass, in a fresh process), and a 4× budget costs more (the measure is live)
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokenmill.engines.hf import load_tokenizer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=152_064, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512))
    model.save_pretrained(tmp_path / "big-vocab")
    load_tokenizer("tiny-small").save_pretrained(tmp_path / "big-vocab")
    # (budgets whose arrays pass glibc's 32 MiB mmap threshold: smaller freed blocks may stay
    # in the heap and count in RSS, though nothing holds them)
    extra = {}
    for budget in (128, 512):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "big-vocab"), str(budget)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["tokens"] == 1536
        extra[budget] = got["extra"]
    assert extra[128] < 128 + 40, extra  # the budget + decoder activations and allocator slack
    assert extra[512] < 512 + 40 and extra[512] > extra[128] + 250, extra
