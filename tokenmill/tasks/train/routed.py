"""Routed generation (R2R inference) and its evaluation.

The small model S decodes greedily; at every step the router sees S's view of the next
token (final state s_t, embedding of its argmax ŷ_t, top-k logits z_t) and, when
σ(g(s_t, e(ŷ_t), z_t)) ≥ τ, the token is the large model L's argmax instead. Both models
keep a KV cache over the shared sequence, so either can take any step.

The evaluation reports, on a world's held-out prompts, accuracy against the share of
tokens L produced, for: small-only, large-only, the router at its threshold (and more
thresholds, for the curve), and random routing with the same share — R2R's comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from tokenmill import ids
from tokenmill.tasks.train.router_config import RouterConfig
from tokenmill.engines.base import pad_rows
from tokenmill.engines.hf import HFEngine
from tokenmill.schema import ROUTING_EVAL
from tokenmill.storage.lake import Lake

# decide(state [B, d], embedding of S's argmax [B, d], top-k logits [B, k], step) → route to L [B] bool
Decide = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class Routed:
    token_ids: np.ndarray  # [T] int, EOS included when generated
    from_large: np.ndarray  # [T] bool: token produced by the large model


def never(state, emb, top, step):
    return torch.zeros(state.shape[0], dtype=torch.bool, device=state.device)


def always(state, emb, top, step):
    return torch.ones(state.shape[0], dtype=torch.bool, device=state.device)


def at_random(p: float, seed: int = 0) -> Decide:
    gen = torch.Generator().manual_seed(seed)

    def decide(state, emb, top, step):
        return (torch.rand(state.shape[0], generator=gen) < p).to(state.device)

    return decide


def by_router(router: torch.nn.Module, threshold: float) -> Decide:
    def decide(state, emb, top, step):
        return torch.sigmoid(router(state.float(), emb.float(), top.float())) >= threshold

    return decide


def routed_generate(small: HFEngine, large: HFEngine, prompt_ids: list[list[int]], decide: Decide, max_tokens: int = 96,
                    top_k: int = 100, batch_size: int = 128) -> list[Routed]:
    """Greedy routed decoding of every prompt (token id lists), in batches."""
    out: list[Routed] = []
    for start in range(0, len(prompt_ids), batch_size):
        out += _routed_batch(small, large, prompt_ids[start : start + batch_size], decide, max_tokens, top_k)
    return out


@torch.inference_mode()
def _routed_batch(small: HFEngine, large: HFEngine, prompts, decide: Decide, max_tokens: int, top_k: int) -> list[Routed]:
    tok = small.tokenizer
    dev = small.device
    ids, attn = pad_rows(prompts, tok.pad_token_id, left=True)
    ids, attn = ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    s_dec, s_head, s_emb = small.decoder(), small.model.get_output_embeddings(), small.model.get_input_embeddings()
    s = s_dec(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    ll = large.model(input_ids=ids.to(large.device), attention_mask=attn.to(large.device), position_ids=pos.to(large.device),
                     use_cache=True, logits_to_keep=1)
    state, s_cache, l_logits, l_cache = s.last_hidden_state[:, -1], s.past_key_values, ll.logits[:, -1], ll.past_key_values
    nxt = attn.sum(1)
    active = torch.ones(len(prompts), dtype=torch.bool, device=dev)
    k = min(top_k, s_head.out_features)
    steps_tok, steps_large = [], []
    for step in range(max_tokens):
        top = s_head(state).float().topk(k, -1)
        pred = top.indices[:, 0]
        to_large = decide(state, s_emb(pred), top.values, step) & active
        token = torch.where(to_large, l_logits.argmax(-1).to(dev), pred)
        token = torch.where(active, token, torch.full_like(token, tok.pad_token_id))
        steps_tok.append(token)
        steps_large.append(to_large)
        active = active & (token != tok.eos_token_id)
        if not active.any():
            break
        # finished rows keep decoding padding (never read): shapes stay fixed, no re-batching
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        p = nxt[:, None]
        nxt = nxt + 1
        s = s_dec(input_ids=token[:, None], attention_mask=attn, position_ids=p, past_key_values=s_cache, use_cache=True)
        state, s_cache = s.last_hidden_state[:, -1], s.past_key_values
        ll = large.model(input_ids=token[:, None].to(large.device), attention_mask=attn.to(large.device),
                         position_ids=p.to(large.device), past_key_values=l_cache, use_cache=True)
        l_logits, l_cache = ll.logits[:, -1], ll.past_key_values
    toks = torch.stack(steps_tok, 1).cpu().numpy()
    from_large = torch.stack(steps_large, 1).cpu().numpy()
    is_eos = toks == tok.eos_token_id
    lengths = np.where(is_eos.any(1), is_eos.argmax(1) + 1, toks.shape[1])
    return [Routed(toks[r, :n], from_large[r, :n]) for r, n in enumerate(lengths)]


def accuracy_and_share(world, prompts, routed: list[Routed], tokenizer) -> tuple[float, float, int]:
    texts = tokenizer.batch_decode([r.token_ids for r in routed], skip_special_tokens=True)
    acc = float(np.mean([world.verify(p, t).reward for p, t in zip(prompts, texts)]))
    tokens = sum(len(r.token_ids) for r in routed)
    share = sum(int(r.from_large.sum()) for r in routed) / max(tokens, 1)
    return acc, share, tokens


def evaluate_routing(lake: Lake, router_path: str, settings: RouterConfig, large_model: str | None = None,
                     progress: Callable[[str], None] | None = None) -> pa.Table:
    """Accuracy vs large-model share of small-only, large-only, the router (its τ and
    `settings.thresholds`) and random routing at each router point's share, on `settings`'
    evaluation prompts; committed to `routing_eval` under the router's training run and returned."""
    world, prompts, split = settings.eval_world, settings.eval_prompts, settings.eval_split
    max_tokens, thresholds, seed = settings.max_tokens, settings.thresholds, settings.seed
    from tokenmill.engines.base import prompt_token_ids
    from tokenmill.sources.worlds import get_world
    from tokenmill.tasks.generate import cached_engine
    from tokenmill.tasks.train.router import load_router

    router, meta = load_router(lake, router_path)
    large_name = large_model or meta["large_models"][0]
    small, large = cached_engine("hf", meta["small_model"]), cached_engine("hf", large_name)
    w = get_world(world)
    plist = w.prompts(prompts, seed=seed, split=split)
    p_ids = prompt_token_ids(small.tokenizer, [p.prompt for p in plist])
    k = meta["dims"]["k"]
    taus = [meta["threshold"]] + sorted(set(thresholds or []) - {meta["threshold"]}, reverse=True)
    rows = []

    def run(policy: str, decide: Decide, threshold: float | None) -> float:
        if progress:
            progress(policy)
        acc, share, tokens = accuracy_and_share(w, plist, routed_generate(small, large, p_ids, decide, max_tokens, k),
                                                small.tokenizer)
        rows.append({"policy": policy, "threshold": threshold, "large_share": share, "accuracy": acc, "tokens": tokens})
        return share

    run("small-only", never, None)
    run("large-only", always, None)
    for tau in taus:
        share = run("router", by_router(router, tau), tau)
        run("random", at_random(share, seed), share)
    eval_id = ids.content_id("routing-eval", meta["artifact_id"], large_name, world, split, str(prompts), str(max_tokens),
                             ids.canonical_json(taus), str(seed))
    n = len(rows)
    table = pa.table({
        "eval_id": [eval_id] * n, "router_id": [meta["artifact_id"]] * n,
        "policy": [r["policy"] for r in rows],
        "threshold": pa.array([r["threshold"] for r in rows], pa.float32()),
        "large_share": pa.array([r["large_share"] for r in rows], pa.float32()),
        "accuracy": pa.array([r["accuracy"] for r in rows], pa.float32()),
        "prompts": pa.array([len(plist)] * n, pa.int32()), "tokens": pa.array([r["tokens"] for r in rows], pa.int64()),
        "world": [world] * n, "split": [split] * n, "small_model": [meta["small_model"]] * n, "large_model": [large_name] * n,
        "created_at": pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
    }, schema=ROUTING_EVAL.schema)
    lake.commit("routing_eval", meta["run_id"], table)
    return table
