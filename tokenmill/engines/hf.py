"""transformers engine: batched generation and exact teacher-forced scoring, CPU or GPU.

Generation sorts prompts by length and runs them in batches (left padding); per-token
statistics come from the raw `output_logits`, not the processed `scores` (those have
temperature/top-p applied and EOS masked under `min_new_tokens`). A completion stops where
prompt + completion fills the model's context (`max_context`, finish_reason "length"), as
vLLM's does at `max_model_len`. Scoring runs the
decoder once per length-bucketed batch and applies the LM head only at completion
positions, so no logits are computed for prompt tokens.
"""

from __future__ import annotations

import inspect
import os
from functools import lru_cache
from typing import Sequence

import torch

from tokenmill.capabilities import ENTROPY, GENERATE, HIDDEN_STATES, LOGITS, NEXT_TOKEN_FEATURES, SCORE
from tokenmill.engines.base import (Generation, NextTokenFeatures, SamplingParams, Scored,
                                    entropy_of, eos_token_ids, pad_rows, prompt_token_ids, split_rows, token_stats)
from tokenmill.errors import EngineError
from tokenmill.models.registry import resolve_model


LOGITS_CHUNK = 2048  # most completion tokens per LM-head call when scoring (fewer where `logits_rows` says)
LOGITS_MEMORY_MB = 512.0  # default MiB for the [tokens, vocab] float32 arrays one LM-head call keeps alive
HEAD_COPIES = 4  # [tokens, vocab] float32 arrays alive at once in `token_stats` (logits, log p, p·log p, nan_to_num)
# rows: the head over whole rows of the vocabulary, row chunks within LOGITS_MEMORY_MB (`token_stats`);
# fused: chunked over the vocabulary too, running statistics per row (`engines/fused_head.py`)
HEADS = ("rows", "fused")


def logits_rows(vocab: int, memory_mb: float = LOGITS_MEMORY_MB, copies: int = 1, bytes_per: int = 4) -> int:
    """Most tokens whose `copies` live [tokens, vocab] arrays of `bytes_per`-byte floats fit in
    `memory_mb` MiB (at least 1): ⌊memory_mb · 2²⁰ / (vocab · bytes_per · copies)⌋. At 512 MiB
    and 3 float32 copies: 910 tokens for a 49,152-token vocabulary, 294 for 152,064."""
    return max(1, int(memory_mb * 2**20) // (vocab * bytes_per * copies))


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_hf(model: str, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer, ModelRef) for a bundled name, local path or hub id."""
    from transformers import AutoModelForCausalLM

    ref = resolve_model(model)
    if os.environ.get("TRANSFORMERS_VERBOSITY") == "error":  # the CLI's quiet mode
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    dev = _device(device)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    tok = load_tokenizer(model)
    try:
        net = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch_dtype).to(dev).eval()
    except OSError as e:
        raise EngineError(f"cannot load model {model!r}: {e}".splitlines()[0], where=ref.path,
                          fix="check the path or hub id (no model hub is reachable offline)") from e
    return net, tok, ref


@lru_cache(maxsize=16)
def load_tokenizer(model: str):
    """The tokenizer of a model alone (no weights), cached per model."""
    from transformers import AutoTokenizer

    ref = resolve_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(ref.path)
    except OSError as e:
        raise EngineError(f"cannot load the tokenizer of {model!r}: {e}".splitlines()[0], where=ref.path,
                          fix="check the path or hub id (no model hub is reachable offline)") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


class HFEngine:
    name = "hf"
    # everything: generation, scoring with exact entropy, hidden states, full logits, R2R features
    capabilities = frozenset({GENERATE, SCORE, ENTROPY, HIDDEN_STATES, LOGITS, NEXT_TOKEN_FEATURES})
    logprobs_kind = "raw"

    def __init__(self, model: str, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 64, token_budget: int | None = None, head: str = "rows", pack: bool = False):
        if head not in HEADS:
            raise EngineError(f"hf engine: unknown head {head!r}", fix=f"choose one of {', '.join(HEADS)}")
        self.head = head  # how scoring applies the LM head (HEADS)
        self.pack = pack  # scoring's joint passes packed, unpadded (`engines/packing.py`), not right-padded
        self.model, self.tokenizer, ref = load_hf(model, device, dtype)
        self.model_id = ref.model_id
        self.device = self.model.device
        self.batch_size = batch_size  # prompts per generate() call (each with n samples)
        # padded tokens per scoring batch: on CPU smaller batches stay in cache (measured
        # ~1.6x faster than 32k on 2 cores, bench/bench_score.py); GPUs want large ones
        self.token_budget = token_budget or (32768 if self.device.type == "cuda" else 8192)
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)  # prompt + completion
        # prefill computes only the last position's logits where the model supports it:
        # [batch, prompt, vocab] logits would cost more memory than the KV cache
        accepts = inspect.signature(self.model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        self._stop_cache: dict[tuple, object] = {}

    # -- generation -------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        enc = prompt_token_ids(self.tokenizer, prompts)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        results: list[Generation] = []
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            results.extend(self._generate_batch([enc[i] for i in idx], idx, params, params.seed * 1_000_003 + b))
        results.sort(key=lambda g: (g.prompt_index, g.sample_index))
        return results

    def _generate_batch(self, prompt_ids: list[list[int]], prompt_index: list[int], params: SamplingParams, seed: int):
        """One decode loop over a batch: per-step statistics as it runs, finished rows dropped.

        Each unique prompt is prefilled once (its KV cache repeated to its n samples), and
        only the last position's logits are computed. Every step records the chosen token's
        raw logprob, the exact entropy and the top-k from the raw logits of the live rows
        only, so memory holds the KV cache and [rows, steps, k] numbers, never
        [rows, steps, vocab] logits. A row ends at an EOS id (`eos_token_ids`), a stop
        string, its `max_tokens`, or where prompt + completion fills the context; its KV
        cache rows are then dropped, so finished rows stop costing compute.
        """
        dev, tok = self.device, self.tokenizer
        greedy = params.temperature <= 0
        n = 1 if greedy else params.n  # greedy samples are all alike: decode once, repeat below
        # a completion ends where prompt + completion fills the context, like vLLM's max_model_len
        # (a prefix that fills the context gets an empty completion; the generate stage refuses
        # such prompts up front, naming them)
        p_len = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
        room = ((self.max_context - p_len) if self.max_context else torch.full_like(p_len, params.max_tokens)).clamp(min=0)
        cap = room.clamp(max=params.max_tokens)
        max_new = max(1, int(cap.max()))
        ids, attn = pad_rows(prompt_ids, tok.pad_token_id, left=True)
        ids, attn = ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        gen = torch.Generator(device=dev).manual_seed(seed)
        eos = torch.tensor(self._eos_ids(params), dtype=torch.long, device=dev)
        stop_strings = self._stop_criteria(params)
        k = params.logprobs
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **self._last_only)
        logits, cache = out.logits[:, -1], out.past_key_values
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, attn = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0)
        rows = len(prompt_ids) * n
        live = torch.arange(rows, device=dev)  # which row each live batch entry is
        next_pos = attn.sum(1)
        row_cap = cap.to(dev).repeat_interleave(n)
        steps_ids = torch.full((rows, max_new), tok.pad_token_id, dtype=torch.long, device=dev)
        steps_lp = torch.zeros((rows, max_new), device=dev)
        steps_ent = torch.zeros((rows, max_new), device=dev)
        steps_top_ids = torch.zeros((rows, max_new, k), dtype=torch.int32, device=dev)
        steps_top_lp = torch.zeros((rows, max_new, k), device=dev)
        lengths = row_cap.clamp(min=0).clone()
        stopped = torch.zeros(rows, dtype=torch.bool, device=dev)
        for t in range(max_new):
            nxt, lp, ent, top_ids, top_lp = _decode_step(logits.float(), params, gen, k)
            steps_ids[live, t], steps_lp[live, t], steps_ent[live, t] = nxt, lp, ent
            steps_top_ids[live, t], steps_top_lp[live, t] = top_ids, top_lp
            hit = torch.isin(nxt, eos)
            if stop_strings is not None:
                hit |= stop_strings(steps_ids[live, : t + 1], None).to(dev)
            hit &= t < row_cap[live]  # a stop past the row's room does not count
            done = hit | (t + 1 >= row_cap[live])
            stopped[live[hit]] = True
            lengths[live[hit]] = t + 1
            if bool(done.all()):
                break
            if bool(done.any()):  # drop finished rows from the batch and the cache
                keep = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, nxt, attn, next_pos = live[keep], nxt[keep], attn[keep], next_pos[keep]
            attn = torch.cat([attn, attn.new_ones((len(live), 1))], 1)
            out = self.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            logits, cache, next_pos = out.logits[:, -1], out.past_key_values, next_pos + 1
        if greedy and params.n > 1:
            steps_ids, steps_lp, steps_ent, steps_top_ids, steps_top_lp, lengths, stopped = (
                t.repeat_interleave(params.n, 0) for t in (steps_ids, steps_lp, steps_ent, steps_top_ids, steps_top_lp,
                                                            lengths, stopped))
        valid = torch.arange(max_new, device=dev)[None, :] < lengths[:, None]
        lens = lengths.tolist()
        cols = [split_rows(t[valid].cpu().numpy(), lens)
                for t in (steps_ids.int(), steps_lp, steps_ent, steps_top_ids, steps_top_lp)]
        gens = []
        for r in range(len(lens)):
            p = r // params.n
            gens.append(Generation(
                prompt_index=prompt_index[p], sample_index=r % params.n, prompt_token_ids=list(prompt_ids[p]),
                token_ids=cols[0][r], logprobs=cols[1][r], entropy=cols[2][r], topk_ids=cols[3][r],
                topk_logprobs=cols[4][r], finish_reason="stop" if bool(stopped[r]) else "length",
            ))
        return gens

    def _eos_ids(self, params: SamplingParams) -> list[int]:
        return eos_token_ids(self.tokenizer, getattr(self.model, "generation_config", None), params)

    def _stop_criteria(self, params: SamplingParams):
        """transformers' StopStringCriteria (vectorised over the batch: it precomputes which
        token tails can complete each string) for the run's stop strings, or None."""
        if not params.stop:
            return None
        from transformers.generation.stopping_criteria import StopStringCriteria

        key = tuple(params.stop)
        if key not in self._stop_cache:
            self._stop_cache[key] = StopStringCriteria(self.tokenizer, list(key))
        return self._stop_cache[key]

    # -- teacher-forced scoring -------------------------------------------------------
    @torch.inference_mode()
    def score(self, prompt_ids, completion_ids, top_k: int = 5, entropy: bool = True,
              hidden_layer: int | None = None) -> list[Scored]:
        if len(prompt_ids) != len(completion_ids):
            raise EngineError("score: prompt_ids and completion_ids differ in length")
        out: list[Scored | None] = [None] * len(prompt_ids)
        for batch in self._buckets(prompt_ids, completion_ids):
            self._score_batch(batch, prompt_ids, completion_ids, top_k, hidden_layer, out, entropy)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def next_token_features(self, prompt_ids, completion_ids, top_k: int = 100) -> list[NextTokenFeatures]:
        """What the model sees when it predicts each completion token (R2R's router inputs):
        the final normalised state the LM head reads, the top-k raw logits (descending) and
        their ids — teacher-forced, batched like `score`."""
        out: list[NextTokenFeatures | None] = [None] * len(prompt_ids)
        for batch in self._buckets(prompt_ids, completion_ids):
            h, _, c_len, _ = self._completion_states(batch, prompt_ids, completion_ids, None)
            head = self.model.get_output_embeddings()
            k = min(top_k, head.out_features)
            tops = _over_head_chunks(h, lambda logits, rows: logits.float().topk(k, -1), head)
            lens = c_len.tolist()
            cols = [split_rows(t.cpu().numpy(), lens) for t in
                    (h.float(), torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops]).int())]
            for r, i in enumerate(batch):
                out[i] = NextTokenFeatures(cols[0][r], cols[1][r], cols[2][r])
        return out  # type: ignore[return-value]

    def _buckets(self, prompt_ids, completion_ids) -> list[list[int]]:
        if len(prompt_ids) != len(completion_ids):
            raise EngineError("score: prompt_ids and completion_ids differ in length")
        totals = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and max(totals, default=0) > limit:
            i = max(range(len(totals)), key=totals.__getitem__)
            raise EngineError(f"sequence {i} has {totals[i]} tokens, more than the model's {limit}",
                              fix="truncate completions or use a model with a longer context")
        return _shared_prefix_buckets(prompt_ids, completion_ids, self.token_budget)

    def _score_batch(self, batch, prompt_ids, completion_ids, top_k, hidden_layer, out, entropy=True):
        h, targets, c_len, hidden = self._completion_states(batch, prompt_ids, completion_ids, hidden_layer)
        lp, ent, top_ids, top_lp = self._head_stats(h, targets, top_k, entropy)
        lens = c_len.tolist()
        hidden = split_rows(hidden.float().cpu().numpy(), lens) if hidden is not None else None
        cols = [split_rows(t.cpu().numpy(), lens) if t is not None else [None] * len(lens)
                for t in (lp, ent, top_ids, top_lp)]
        for r, i in enumerate(batch):
            out[i] = Scored(cols[0][r], cols[1][r], cols[2][r], cols[3][r], hidden[r] if hidden else None)

    def _head_stats(self, h, targets, top_k: int, entropy: bool):
        """`token_stats` of the LM head's logits at states `h` [N, d], concatenated over row
        chunks sized as `_over_head_chunks` sizes them (≤ LOGITS_CHUNK rows, HEAD_COPIES
        [rows, V] float32 arrays within LOGITS_MEMORY_MB). A float32 `nn.Linear` head writes
        every chunk's logits into one reused buffer and log p into a second, so memory holds
        two [rows, V] arrays and no chunk faults in fresh pages (on CPU that alone cost more
        than the log-softmax; bench/bench_score_real.py)."""
        head = self.model.get_output_embeddings()
        n, vocab = h.shape[0], head.weight.shape[0]
        if self.head == "fused":  # [rows, VOCAB_CHUNK] at a time: LOGITS_CHUNK rows suffice
            from tokenmill.engines.fused_head import fused_head_stats

            return _cat_parts([fused_head_stats(h[i : i + LOGITS_CHUNK], head.weight, head.bias,
                                                targets[i : i + LOGITS_CHUNK], top_k, entropy)
                               for i in range(0, max(n, 1), LOGITS_CHUNK)])
        step = max(1, min(LOGITS_CHUNK, logits_rows(vocab, LOGITS_MEMORY_MB, HEAD_COPIES), n))
        reuse = isinstance(head, torch.nn.Linear) and head.weight.dtype == h.dtype == torch.float32
        if reuse:
            z_buf = torch.empty(step, vocab, device=h.device)
            lp_buf = torch.empty(step, vocab, device=h.device)
        parts = []
        for i in range(0, max(n, 1), step):
            rows = slice(i, i + step)
            if reuse:
                z = torch.mm(h[rows], head.weight.t(), out=z_buf[: h[rows].shape[0]])
                if head.bias is not None:
                    z += head.bias
                parts.append(token_stats(z, targets[rows], top_k, entropy, overwrite=True, out=lp_buf))
            else:
                parts.append(token_stats(head(h[rows]), targets[rows], top_k, entropy, overwrite=True))
        return _cat_parts(parts)

    @torch.inference_mode()
    def full_logprobs(self, prompt_ids, completion_ids,
                      memory_mb: float | None = LOGITS_MEMORY_MB) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Full-vocabulary raw log-probs at every completion token, for labelers that need
        more than the top-k: ([N, V] float32, [N] targets, per-sequence lengths), N = all
        completion tokens. Within `memory_mb` MiB (None: unbounded): the result takes at
        most half (more tokens are refused: batch by `logits_rows(V, memory_mb / 2)`), the
        LM head fills it in chunks that take the other half. Labelers that need less than
        all [N, V] at once go chunk by chunk: `completion_states`, then `head_logprobs`.
        """
        h, targets, lengths = self.completion_states(prompt_ids, completion_ids)
        vocab, n = self.model.get_output_embeddings().weight.shape[0], h.shape[0]
        budget = memory_mb / 2 if memory_mb is not None else None
        if budget is not None and n > logits_rows(vocab, budget):
            raise EngineError(f"full_logprobs: {n} tokens × {vocab} vocabulary in float32 is {n * vocab * 4 / 2**20:.0f} "
                              f"MiB, over half the {memory_mb:g} MiB budget",
                              fix=f"pass at most {logits_rows(vocab, budget)} completion tokens per call, raise "
                                  "memory_mb, or use completion_states + head_logprobs chunk by chunk")
        out = torch.empty(n, vocab, dtype=torch.float32, device=h.device)
        step = logits_rows(vocab, budget if budget is not None else LOGITS_MEMORY_MB, copies=2)
        for i in range(0, n, step):
            out[i : i + step] = self.head_logprobs(h[i : i + step])
        return out, targets, lengths

    @torch.inference_mode()
    def completion_states(self, prompt_ids, completion_ids) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """One decoder pass over the given rollouts, in their order: ([N, d] the final states
        the LM head reads to predict each completion token, [N] those tokens, lengths). Small
        next to [N, V] logits: apply `head_logprobs` to row chunks of it."""
        h, targets, c_len, _ = self._completion_states(list(range(len(prompt_ids))), prompt_ids, completion_ids, None)
        return h, targets, c_len.tolist()

    @torch.inference_mode()
    def head_logprobs(self, h: torch.Tensor) -> torch.Tensor:
        """[n, V] float32 raw log-probs from states of `completion_states`: the LM head, then
        log-softmax (two [n, V] float32 arrays at the peak, one after)."""
        return torch.log_softmax(self.model.get_output_embeddings()(h).float(), dim=-1)

    def _completion_states(self, batch, prompt_ids, completion_ids, hidden_layer):
        """One decoder pass: (final state predicting each completion token [N, d], the
        tokens [N], completion lengths, chosen layer's state at each token or None).

        Rollouts of one prompt share its prefix: when the batch repeats a prompt and that runs
        fewer padded tokens (`_batch_cost`), the prompt runs once per unique prompt and its
        KV cache is gathered to every rollout; then the completions, longest first, in up to
        COMPLETION_SEGMENTS segments of `_segment` tokens, each a decoder call over the rows
        still running (the others leave the batch and the cache), so a completion is padded
        to the end of its own segment, not to the longest completion.
        """
        if any(len(prompt_ids[i]) == 0 for i in batch):
            raise EngineError("score: a completion token at position 0 has no context",
                              fix="give at least one prompt token (e.g. BOS)")
        uniq: dict[tuple, int] = {}
        which = [uniq.setdefault(tuple(prompt_ids[i]), len(uniq)) for i in batch]
        lengths = [len(completion_ids[i]) for i in batch]
        c_len = torch.tensor(lengths)
        p_len = [len(prompt_ids[i]) for i in batch]
        max_t = max(p + c for p, c in zip(p_len, lengths))
        if max(lengths) == 0 or (_batch_cost(len(batch), len(uniq), max(p_len), _segment_tokens(lengths), max_t)
                                 == len(batch) * max_t):
            return self._joint_states(batch, prompt_ids, completion_ids, hidden_layer)
        dev = self.device
        base = self.decoder()
        p_ids, p_attn = pad_rows(list(uniq), self.tokenizer.pad_token_id, left=True)
        p_pos = (p_attn.cumsum(1) - 1).clamp(min=0)  # left padding: real tokens start at 0
        res_p = base(input_ids=p_ids.to(dev), attention_mask=p_attn.to(dev), position_ids=p_pos.to(dev),
                     use_cache=True)
        order = sorted(range(len(batch)), key=lambda r: -lengths[r])  # the running rows: a prefix
        rows = torch.tensor([which[r] for r in order], device=dev)
        cache = res_p.past_key_values
        c_ids, c_attn = pad_rows([completion_ids[batch[r]] for r in order], self.tokenizer.pad_token_id)
        c_ids, c_attn = c_ids.to(dev), c_attn.to(dev)
        attn, start = p_attn.to(dev)[rows], p_attn.sum(1).to(dev)[rows]
        n, width, d = len(batch), c_ids.shape[1], res_p.last_hidden_state.shape[-1]
        states = res_p.last_hidden_state.new_empty(n, width, d)
        hidden = res_p.last_hidden_state.new_empty(n, width, d) if hidden_layer is not None else None
        seg, live = _segment(width), n
        for t0 in range(0, width, seg):
            running = sum(1 for c in lengths if c > t0)
            if t0 == 0 or running < live:  # the prompt's keys/values, once per running rollout
                cache.batch_select_indices(rows[:running] if t0 == 0 else torch.arange(running, device=dev))
                live, attn = running, attn[:running]
            ids, mask = c_ids[:live, t0 : t0 + seg], c_attn[:live, t0 : t0 + seg]
            attn = torch.cat([attn, mask], 1)
            res = base(input_ids=ids, attention_mask=attn, position_ids=start[:live, None] + t0 +
                       torch.arange(ids.shape[1], device=dev), past_key_values=cache, use_cache=True,
                       output_hidden_states=hidden_layer is not None)
            states[:live, t0 : t0 + ids.shape[1]] = res.last_hidden_state
            if hidden is not None:
                hidden[:live, t0 : t0 + ids.shape[1]] = res.hidden_states[hidden_layer]
        # the state predicting completion token j: the prompt's last state for j = 0, else
        # the completion's state at j - 1; back in the batch's order
        back = torch.tensor(sorted(range(n), key=order.__getitem__), device=dev)
        prev = torch.cat([res_p.last_hidden_state[rows, -1:], states[:, :-1]], 1)[back]
        valid = c_attn.bool()[back]
        hidden = hidden[back][valid] if hidden is not None else None
        return prev[valid], c_ids[back][valid], c_len.to(dev), hidden

    def _joint_states(self, batch, prompt_ids, completion_ids, hidden_layer):
        """`_completion_states` over prompt + completion in one right-padded pass (packed
        with `pack`)."""
        if self.pack:
            return self._packed_states(batch, prompt_ids, completion_ids, hidden_layer)
        ids, attn = pad_rows([list(prompt_ids[i]) + list(completion_ids[i]) for i in batch],
                             self.tokenizer.pad_token_id)
        ids, attn = ids.to(self.device), attn.to(self.device)
        res = self.decoder()(input_ids=ids, attention_mask=attn, output_hidden_states=hidden_layer is not None)
        p_len = torch.tensor([len(prompt_ids[i]) for i in batch], device=ids.device)
        c_len = torch.tensor([len(completion_ids[i]) for i in batch], device=ids.device)
        rows = torch.repeat_interleave(torch.arange(len(batch), device=ids.device), c_len)
        offs = torch.arange(int(c_len.sum()), device=ids.device) - torch.repeat_interleave(torch.cumsum(c_len, 0) - c_len, c_len)
        tok_pos = torch.repeat_interleave(p_len, c_len) + offs  # position of each completion token
        h = res.last_hidden_state[rows, tok_pos - 1]  # the state that predicts each token
        hidden = res.hidden_states[hidden_layer][rows, tok_pos] if hidden_layer is not None else None
        return h, ids[rows, tok_pos], c_len, hidden

    def _packed_states(self, batch, prompt_ids, completion_ids, hidden_layer):
        """`_joint_states` with the sequences packed end to end (`packing.packed_batch`):
        positions restart per sequence and a block-causal mask keeps them apart."""
        from tokenmill.datasets import block_causal_mask  # the packed trainer's own mask
        from tokenmill.engines.packing import packed_batch

        seqs = [list(prompt_ids[i]) + list(completion_ids[i]) for i in batch]
        ids, pos, seg, row_of, offset = (t.to(self.device) for t in packed_batch(seqs, self.tokenizer.pad_token_id))
        res = self.decoder()(input_ids=ids, position_ids=pos, attention_mask=block_causal_mask(seg),
                             output_hidden_states=hidden_layer is not None)
        dev = ids.device
        p_len = torch.tensor([len(prompt_ids[i]) for i in batch], device=dev)
        c_len = torch.tensor([len(completion_ids[i]) for i in batch], device=dev)
        rows = torch.repeat_interleave(row_of, c_len)
        offs = torch.arange(int(c_len.sum()), device=dev) - torch.repeat_interleave(torch.cumsum(c_len, 0) - c_len, c_len)
        col = torch.repeat_interleave(offset + p_len, c_len) + offs  # column of each completion token
        h = res.last_hidden_state[rows, col - 1]
        hidden = res.hidden_states[hidden_layer][rows, col] if hidden_layer is not None else None
        return h, ids[rows, col], c_len, hidden

    def decoder(self):
        """The model without its LM head (returns hidden states)."""
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def close(self) -> None:
        self.model = None


def _cat_parts(parts):
    """The (logprob, entropy or None, top ids, top logprobs) of row chunks, concatenated."""
    return tuple(torch.cat([pt[k] for pt in parts]) if parts[0][k] is not None else None for k in range(4))


def warp_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Logits as transformers' sampling warps them: / T, then top-p (the tokens whose
    ascending cumulative probability is ≤ 1 − p get −inf, keeping at least one)."""
    z = logits / temperature
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=False)
        drop = sorted_z.softmax(-1).cumsum(-1) <= (1 - top_p)
        drop[:, -1] = False
        z = z.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return z


def _decode_step(raw: torch.Tensor, params: SamplingParams, gen: torch.Generator, k: int):
    """(next token, its raw logprob, entropy, top-k ids, top-k logprobs) of each live row from
    its raw logits [rows, V]: one log-softmax serves the statistics and, at T = 1 without
    top-p, the draw too."""
    logp = torch.log_softmax(raw, dim=-1)
    p = logp.exp()
    ent = entropy_of(logp, p)
    top_lp, top_ids = logp.topk(k, dim=-1) if k > 0 else (logp[:, :0], logp[:, :0].long())
    if params.temperature <= 0:
        nxt = top_ids[:, 0] if k > 0 else raw.argmax(-1)
    else:
        plain = params.temperature == 1.0 and params.top_p >= 1.0
        nxt = _draw(p if plain else warp_logits(raw, params.temperature, params.top_p).softmax(-1), gen)
    return nxt, logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1), ent, top_ids.int(), top_lp


def _draw(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row drawn from `probs` by inverting its CDF with one uniform per row, on
    the engine's seeded generator (never the global RNG). Same law as torch.multinomial, which
    on CPU takes ~4x longer for a 49k vocabulary; the CDF is summed in float64 so tokens in
    the far tail keep their share."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[1] - 1).squeeze(1)  # never a p = 0 token


BUCKET_ROWS = 1024  # most rollouts per scoring batch (bounds the search in `_shared_prefix_buckets`)
COMPLETION_SEGMENTS = 4  # most decoder calls over the completions of a shared-prefix batch


def _segment(max_c: int) -> int:
    """Tokens per completion segment of a shared-prefix batch whose longest completion has
    `max_c`: ⌈max_c / COMPLETION_SEGMENTS⌉ rounded up to a multiple of 16."""
    per = -(-max_c // COMPLETION_SEGMENTS)
    return max(16, -(-per // 16) * 16)


def _segment_tokens(lengths) -> int:
    """Padded completion tokens of a shared-prefix batch: each completion to the end of its
    last segment (`_segment`)."""
    seg = _segment(max(lengths, default=0))
    return sum(-(-c // seg) * seg for c in lengths)


def _batch_cost(n: int, n_prompts: int, max_p: int, seg_tokens: int, max_t: int) -> int:
    """Padded tokens `_completion_states` runs for a batch of `n` rollouts with `n_prompts`
    unique prompts: each unique prompt at the widest prompt, then the completions in
    segments (`seg_tokens`, `_segment_tokens`: shared prefix), or each prompt + completion
    at the widest total (joint pass), whichever is fewer."""
    joint = n * max_t
    return min(joint, n_prompts * max_p + seg_tokens) if n_prompts < n else joint


def _shared_prefix_buckets(prompt_ids, completion_ids, budget: int, overhead: float | None = None) -> list[list[int]]:
    """Scoring batches, each under `budget` padded tokens as `_completion_states` runs it
    (`_batch_cost`), cut to run the fewest padded tokens in all: rollouts in order of
    completion length (of prompt + completion when no prompt repeats), then the cut points
    that minimise Σ cost + `overhead` per batch, by dynamic programming over that order (a
    batch is contiguous in it and holds ≤ BUCKET_ROWS rollouts). With n samples per prompt
    a batch shares each prompt's pass among the samples it holds, so the cuts trade prompt
    sharing against padding (to the end of a completion's segment, or in a joint pass to
    the longest prompt + completion). `overhead` (default budget / 8) is what a batch's own
    decoder calls cost in padded tokens: tens of ms on an idle CPU, but seconds on a loaded
    one, where each of a call's ~750 multi-threaded ops can wait for a descheduled thread
    (measured on 2 shared cores: a 256-token prompt pass cost as much as ~1,000 tokens of a
    large one), and kernel launches on a GPU. On bench/bench_score_real.py's rollout mix
    (7,830 tokens; 5,727 without padding and repeated prompts) this runs 7,096 padded
    tokens in one batch; the greedy fill it replaced, without segments, ran 9,236."""
    n = len(completion_ids)
    keys: dict[tuple, int] = {}
    pid = [keys.setdefault(tuple(p), len(keys)) for p in prompt_ids]
    p_len = [len(p) for p in prompt_ids]
    c_len = [len(c) for c in completion_ids]
    if len(keys) == n:  # no prompt repeats: every batch is a joint pass
        order = sorted(range(n), key=lambda i: (p_len[i] + c_len[i], c_len[i]))
    else:
        order = sorted(range(n), key=lambda i: (c_len[i], pid[i]))
    overhead = budget / 8 if overhead is None else overhead
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of order[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        seen: set[int] = set()
        max_p = max_t = seg_tokens = 0
        seg = _segment(c_len[order[j - 1]])  # the longest completion of order[i:j] when sorted by it
        for i in range(j - 1, max(-1, j - 1 - BUCKET_ROWS), -1):  # batch order[i:j]
            r = order[i]
            seen.add(pid[r])
            max_p, max_t = max(max_p, p_len[r]), max(max_t, p_len[r] + c_len[r])
            seg_tokens += -(-c_len[r] // seg) * seg
            cost = _batch_cost(j - i, len(seen), max_p, seg_tokens, max_t)
            if cost > budget and i < j - 1:  # a batch only grows dearer as it reaches back
                break
            if best[i] + cost + overhead < best[j]:
                best[j], cut[j] = best[i] + cost + overhead, i
    batches: list[list[int]] = []
    j = n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = cut[j]
    return batches[::-1]


def _over_head_chunks(h, fn, head, memory_mb: float = LOGITS_MEMORY_MB, copies: int = HEAD_COPIES):
    """[fn(head(h[rows]), rows)] over row chunks of `h`: `copies` [rows, vocab] float32 arrays
    of one call fit `memory_mb` (`logits_rows`), and a chunk holds at most LOGITS_CHUNK rows
    (one call even when `h` is empty)."""
    step = min(LOGITS_CHUNK, logits_rows(head.weight.shape[0], memory_mb, copies))
    return [fn(head(h[i : i + step]), slice(i, i + step)) for i in range(0, max(h.shape[0], 1), step)]
