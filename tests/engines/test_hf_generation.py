"""The transformers engine's decode loop: exact against `generate`, every EOS, stop strings,
finished rows dropped, memory bounded by the KV cache (never steps × vocabulary)."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tokenmill.engines import SamplingParams
from tokenmill.engines.hf import HFEngine, warp_logits
from tokenmill.models.registry import resolve_model
from tokenmill.sources.worlds import get_world


@pytest.fixture(scope="module")
def prompt_ids(hf_small):
    texts = [p.prompt for p in get_world("arithmetic").prompts(6)] + [p.prompt for p in get_world("bios").prompts(3, split="all")]
    return hf_small.tokenizer(texts)["input_ids"]


def test_greedy_decoding_equals_transformers_generate_row_by_row(hf_small, prompt_ids):
    gens = hf_small.generate(prompt_ids, SamplingParams(temperature=0, max_tokens=40, logprobs=3))
    eos = hf_small._eos_ids(SamplingParams())
    lengths = set()
    for ids, g in zip(prompt_ids, gens):
        out = hf_small.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=40, do_sample=False, eos_token_id=eos,
                                      pad_token_id=hf_small.tokenizer.pad_token_id, output_logits=True,
                                      return_dict_in_generate=True)
        ref = out.sequences[0, len(ids):].tolist()
        logp = torch.log_softmax(torch.cat(out.logits).float(), -1)
        assert g.token_ids.tolist() == ref
        np.testing.assert_allclose(g.logprobs, logp[torch.arange(len(ref)), ref].numpy(), atol=1e-4)
        np.testing.assert_array_equal(g.topk_ids, logp.topk(3, -1).indices.numpy())
        ent = -(logp.exp() * logp).sum(-1).numpy()
        np.testing.assert_allclose(g.entropy, ent, atol=1e-4)
        assert g.finish_reason == ("stop" if ref[-1] in eos else "length")
        lengths.add(len(ref))
    assert len(lengths) > 2  # rows finished at different steps while the rest went on


def test_a_model_whose_generation_config_lists_another_eos_stops_there(tmp_path, prompt_ids):
    src = resolve_model("tiny-small").path
    model_dir = tmp_path / "m"
    shutil.copytree(src, model_dir)
    engine = HFEngine(str(model_dir))
    eq = engine.tokenizer.convert_tokens_to_ids("=")
    cfg = json.loads((model_dir / "generation_config.json").read_text())
    cfg["eos_token_id"] = [engine.tokenizer.eos_token_id, eq]  # as an instruct model lists its end of turn
    (model_dir / "generation_config.json").write_text(json.dumps(cfg))
    engine = HFEngine(str(model_dir))
    gens = engine.generate(prompt_ids[:6], SamplingParams(temperature=0, max_tokens=40))
    assert all(g.token_ids[-1] == eq and (g.token_ids[:-1] != eq).all() and g.finish_reason == "stop" for g in gens)


def test_stop_strings_and_stop_ids_end_a_completion_after_the_stopping_token(hf_small, prompt_ids):
    tok = hf_small.tokenizer
    by_string = hf_small.generate(prompt_ids[:6], SamplingParams(temperature=0, max_tokens=40, stop=("=",)))
    by_id = hf_small.generate(prompt_ids[:6], SamplingParams(temperature=0, max_tokens=40,
                                                             stop_token_ids=(tok.convert_tokens_to_ids("="),)))
    for a, b in zip(by_string, by_id):
        assert tok.decode(a.token_ids).endswith("=") and tok.decode(a.token_ids).count("=") == 1
        assert a.token_ids.tolist() == b.token_ids.tolist() and a.finish_reason == b.finish_reason == "stop"


def test_sampling_warps_logits_as_transformers_does():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_p in [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5), (1.0, 0.05)]:
        ref = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone())) \
            if top_p < 1 else TemperatureLogitsWarper(temperature)(None, logits.clone())
        ours = warp_logits(logits, temperature, top_p)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))
        torch.testing.assert_close(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


def test_samples_are_reproducible_by_seed_and_differ_across_seeds(hf_small, prompt_ids):
    params = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_tokens=32, seed=7)
    a, b = hf_small.generate(prompt_ids, params), hf_small.generate(prompt_ids, params)
    c = hf_small.generate(prompt_ids, SamplingParams(n=4, temperature=1.0, top_p=0.95, max_tokens=32, seed=8))
    assert [g.token_ids.tolist() for g in a] == [g.token_ids.tolist() for g in b]
    assert [g.token_ids.tolist() for g in a] != [g.token_ids.tolist() for g in c]
    assert [(g.prompt_index, g.sample_index) for g in a] == [(p, s) for p in range(len(prompt_ids)) for s in range(4)]
    # each sample's logprob is the raw log-softmax of the token it drew (teacher-forced check)
    scored = hf_small.score([g.prompt_token_ids for g in a], [g.token_ids for g in a], top_k=0, entropy=False)
    np.testing.assert_allclose(np.concatenate([g.logprobs for g in a]), np.concatenate([s.logprobs for s in scored]),
                               atol=1e-4)


PEAK_RSS = textwrap.dedent("""
    import sys, torch
    from tokenmill.engines.hf import HFEngine
    from tokenmill.engines.base import SamplingParams
    engine = HFEngine(sys.argv[1])
    ids = [[5, 6, 7, 8]] * 16
    engine.generate(ids, SamplingParams(n=1, temperature=1.0, max_tokens=4, stop_token_ids=()))  # warm-up
    # ru_maxrss counts the parent's RSS at fork (a large pytest): reset the high-water mark
    def hwm_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
    open("/proc/self/clear_refs", "w").write("5")
    base = hwm_kib()
    gens = engine.generate(ids, SamplingParams(n=1, temperature=1.0, max_tokens=int(sys.argv[2])))
    print(hwm_kib() - base, sum(len(g.token_ids) for g in gens))
""")


def test_generation_memory_grows_with_length_only_by_the_kv_cache(tmp_path, smollm2_dir):
    """A 2-layer model with SmolLM2's 49k vocabulary: 16 rows × 512 steps of full-vocabulary
    logits would be 1.6 GB; the KV cache of 16 × 516 tokens is 2 MB."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "wide")
    tok.save_pretrained(tmp_path / "wide")
    growth = {}
    for steps in (8, 512):
        out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tmp_path / "wide"), str(steps)], capture_output=True,
                             text=True, check=True).stdout.split()
        growth[steps] = (int(out[0]) / 1024, int(out[1]))  # MB, tokens generated
    assert growth[512][1] > 16 * 256  # random weights rarely pick EOS: the rows really ran long
    logits_mb = growth[512][1] * len(tok) * 4 / 2**20
    assert growth[512][0] - growth[8][0] < 0.1 * logits_mb, (growth, logits_mb)


def test_draws_follow_the_distribution_and_never_pick_a_zero_probability_token():
    from tokenmill.engines.hf import _draw

    probs = torch.tensor([[0.0, 0.1, 0.2, 0.7, 0.0]]).repeat(200_000, 1)
    counts = torch.bincount(_draw(probs, torch.Generator().manual_seed(0)), minlength=5).double() / 200_000
    assert counts[0] == 0 and counts[4] == 0
    torch.testing.assert_close(counts[1:4], torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), atol=4e-3, rtol=0)
