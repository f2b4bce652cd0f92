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

import os
from functools import lru_cache
from typing import Sequence

import torch

from tokenmill.engines.base import (NON_FINITE_FIX, Generation, NextTokenFeatures, SamplingParams, Scored, pad_rows,
                                    prompt_token_ids, split_rows, token_stats)
from tokenmill.errors import EngineError
from tokenmill.models.registry import resolve_model


LOGITS_CHUNK = 2048  # completion tokens per LM-head call when scoring


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
    logprobs_kind = "raw"

    def __init__(self, model: str, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 64, token_budget: int | None = None):
        self.model, self.tokenizer, ref = load_hf(model, device, dtype)
        self.model_id = ref.model_id
        self.device = self.model.device
        self.batch_size = batch_size  # prompts per generate() call (each with n samples)
        # padded tokens per scoring batch: on CPU smaller batches stay in cache (measured
        # ~1.6x faster than 32k on 2 cores, bench/bench_score.py); GPUs want large ones
        self.token_budget = token_budget or (32768 if self.device.type == "cuda" else 8192)
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)  # prompt + completion

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
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        ids, attn = pad_rows(prompt_ids, tok.pad_token_id, left=True)  # generation continues at the right edge
        width = ids.shape[1]
        # a completion ends where prompt + completion fills the context, like vLLM's max_model_len:
        # each row is cut at its own room (finish_reason "length"); steps past it are discarded
        # (a prefix that fills the context gets an empty completion; the generate stage refuses
        # such prompts up front, naming them)
        room = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)
        room = ((self.max_context - room) if self.max_context else torch.full_like(room, params.max_tokens)).clamp(min=0)
        max_new = max(1, min(params.max_tokens, int(room.max())))
        torch.manual_seed(seed)
        greedy = params.temperature <= 0
        try:
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                do_sample=not greedy, temperature=None if greedy else params.temperature,
                top_p=None if greedy else params.top_p, top_k=None, max_new_tokens=max_new,
                # greedy samples are all alike (and transformers refuses n > 1 without sampling):
                # decode once, repeat below
                num_return_sequences=1 if greedy else params.n, output_logits=True, return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id, eos_token_id=eos,
            )
        except RuntimeError as e:
            if "probability tensor contains" not in str(e):
                raise
            raise EngineError(f"model {self.model_id!r} gave NaN/inf probabilities while sampling", fix=NON_FINITE_FIX) from None
        seqs, logits = out.sequences[:, width:], out.logits  # [R, T], T × [R, V]
        if greedy and params.n > 1:
            seqs, logits = seqs.repeat_interleave(params.n, 0), [lg.repeat_interleave(params.n, 0) for lg in logits]
        rows, steps = seqs.shape
        cap = room.to(seqs.device).repeat_interleave(params.n).clamp(max=steps)  # [R]
        is_eos = (seqs == eos) & (torch.arange(steps, device=seqs.device)[None, :] < cap[:, None])
        has_eos = is_eos.any(1)
        lengths = torch.where(has_eos, is_eos.int().argmax(1) + 1, cap)
        valid = torch.arange(steps, device=seqs.device)[None, :] < lengths[:, None]
        # one step at a time (each vectorised over the batch and vocabulary): never a
        # [rows, steps, vocab] copy, which for a 150k vocabulary would not fit
        per_step = [token_stats(logits[t], seqs[:, t], params.logprobs) for t in range(steps)]
        lp, ent, top_ids, top_lp = (torch.stack([st[i] for st in per_step], dim=1)[valid] for i in range(4))
        lens = lengths.tolist()
        cols = [split_rows(t.cpu().numpy(), lens) for t in (seqs[valid].int(), lp, ent, top_ids, top_lp)]
        gens = []
        for r in range(rows):
            p = r // params.n
            gens.append(Generation(
                prompt_index=prompt_index[p], sample_index=r % params.n, prompt_token_ids=list(prompt_ids[p]),
                token_ids=cols[0][r], logprobs=cols[1][r], entropy=cols[2][r], topk_ids=cols[3][r],
                topk_logprobs=cols[4][r], finish_reason="stop" if bool(has_eos[r]) else "length",
            ))
        return gens

    # -- teacher-forced scoring -------------------------------------------------------
    @torch.inference_mode()
    def score(self, prompt_ids, completion_ids, top_k: int = 5, entropy: bool = True,
              hidden_layer: int | None = None) -> list[Scored]:
        if len(prompt_ids) != len(completion_ids):
            raise EngineError("score: prompt_ids and completion_ids differ in length")
        out: list[Scored | None] = [None] * len(prompt_ids)
        for batch in self._buckets(prompt_ids, completion_ids):
            self._score_batch(batch, prompt_ids, completion_ids, top_k, hidden_layer, out)
        if not entropy:
            for s in out:
                s.entropy = None
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

    def _score_batch(self, batch, prompt_ids, completion_ids, top_k, hidden_layer, out):
        h, targets, c_len, hidden = self._completion_states(batch, prompt_ids, completion_ids, hidden_layer)
        head = self.model.get_output_embeddings()
        parts = _over_head_chunks(h, lambda logits, rows: token_stats(logits, targets[rows], top_k), head)
        lp, ent, top_ids, top_lp = (torch.cat([pt[i] for pt in parts]) for i in range(4))
        lens = c_len.tolist()
        hidden = split_rows(hidden.float().cpu().numpy(), lens) if hidden is not None else None
        cols = [split_rows(t.cpu().numpy(), lens) for t in (lp, ent, top_ids, top_lp)]
        for r, i in enumerate(batch):
            out[i] = Scored(cols[0][r], cols[1][r], cols[2][r], cols[3][r], hidden[r] if hidden else None)

    @torch.inference_mode()
    def full_logprobs(self, prompt_ids, completion_ids) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Full-vocabulary raw log-probs at every completion token, for labelers that need
        more than the top-k (cDPO's contrastive softmax): ([N, V] float32, [N] targets,
        per-sequence lengths), N = all completion tokens. Callers bound N by batching.
        """
        batch = list(range(len(prompt_ids)))
        h, targets, c_len, _ = self._completion_states(batch, prompt_ids, completion_ids, None)
        logits = self.model.get_output_embeddings()(h)
        return torch.log_softmax(logits.float(), dim=-1), targets, c_len.tolist()

    def _completion_states(self, batch, prompt_ids, completion_ids, hidden_layer):
        """One decoder pass: (final state predicting each completion token [N, d], the
        tokens [N], completion lengths, chosen layer's state at each token or None).

        Rollouts of one prompt share its prefix: when the batch repeats a prompt, the prompt
        runs once per unique prompt and its KV cache is gathered to every rollout.
        """
        if any(len(prompt_ids[i]) == 0 for i in batch):
            raise EngineError("score: a completion token at position 0 has no context",
                              fix="give at least one prompt token (e.g. BOS)")
        uniq: dict[tuple, int] = {}
        which = [uniq.setdefault(tuple(prompt_ids[i]), len(uniq)) for i in batch]
        c_len = torch.tensor([len(completion_ids[i]) for i in batch])
        if len(uniq) == len(batch) or int(c_len.max()) == 0:
            return self._joint_states(batch, prompt_ids, completion_ids, hidden_layer)
        dev = self.device
        base = self.decoder()
        p_ids, p_attn = pad_rows(list(uniq), self.tokenizer.pad_token_id, left=True)
        p_pos = (p_attn.cumsum(1) - 1).clamp(min=0)  # left padding: real tokens start at 0
        res_p = base(input_ids=p_ids.to(dev), attention_mask=p_attn.to(dev), position_ids=p_pos.to(dev),
                     use_cache=True)
        rows = torch.tensor(which, device=dev)
        cache = res_p.past_key_values
        cache.batch_select_indices(rows)  # the prompt's keys/values, once per rollout
        c_ids, c_attn = pad_rows([completion_ids[i] for i in batch], self.tokenizer.pad_token_id)
        c_ids, c_attn = c_ids.to(dev), c_attn.to(dev)
        c_pos = p_attn.sum(1).to(dev)[rows, None] + torch.arange(c_ids.shape[1], device=dev)
        res_c = base(input_ids=c_ids, attention_mask=torch.cat([p_attn.to(dev)[rows], c_attn], 1),
                     position_ids=c_pos, past_key_values=cache, use_cache=True,
                     output_hidden_states=hidden_layer is not None)
        # the state predicting completion token j: the prompt's last state for j = 0, else
        # the completion's state at j - 1
        prev = torch.cat([res_p.last_hidden_state[rows, -1:], res_c.last_hidden_state[:, :-1]], 1)
        valid = c_attn.bool()
        hidden = res_c.hidden_states[hidden_layer][valid] if hidden_layer is not None else None
        return prev[valid], c_ids[valid], c_len.to(dev), hidden

    def _joint_states(self, batch, prompt_ids, completion_ids, hidden_layer):
        """`_completion_states` over prompt + completion in one right-padded pass."""
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

    def decoder(self):
        """The model without its LM head (returns hidden states)."""
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def close(self) -> None:
        self.model = None


def _shared_prefix_buckets(prompt_ids, completion_ids, budget: int) -> list[list[int]]:
    """Scoring batches: rollouts in order of completion length (little padding), each batch
    under `budget` padded tokens as `_completion_states` runs it — each unique prompt once at
    the widest prompt, each rollout at the widest completion. With n samples per prompt a
    batch of a few hundred rollouts holds most samples of its prompts, so sharing stays high
    (measured faster than keeping each prompt's samples together, bench/bench_score.py)."""
    c_len = [len(c) for c in completion_ids]
    batches: list[list[int]] = []
    batch: list[int] = []
    prompts: set[tuple] = set()
    max_p = 0
    for i in sorted(range(len(c_len)), key=c_len.__getitem__):
        key = tuple(prompt_ids[i])
        n_p = len(prompts) + (key not in prompts)
        if batch and n_p * max(max_p, len(key)) + (len(batch) + 1) * c_len[i] > budget:
            batches.append(batch)
            batch, max_p = [], 0
            prompts.clear()
        batch.append(i)
        prompts.add(key)
        max_p = max(max_p, len(key))
    if batch:
        batches.append(batch)
    return batches


def _over_head_chunks(h, fn, head):
    """[fn(head(h[rows]), rows)] over row chunks of `h`: the LM head never materialises more
    than LOGITS_CHUNK × vocab logits (one call even when `h` is empty)."""
    return [fn(head(h[i : i + LOGITS_CHUNK]), slice(i, i + LOGITS_CHUNK)) for i in range(0, max(h.shape[0], 1), LOGITS_CHUNK)]
