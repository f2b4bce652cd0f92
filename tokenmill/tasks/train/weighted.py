"""Token-weighted SFT, DPO and TDPO on any transformers causal LM, from a curated dataset.

Both read a dataset written by `tokenmill curate` (`tokenmill/datasets.py`), draw batches
with a seeded RNG, right-pad them, and optimise the losses in `losses.py` with AdamW (optional
warm-up and weight decay by HF Trainer's rules: `lr_factor`, `param_groups`),
gradient accumulation and gradient clipping; float32 weights, with the forward passes under
bf16 autocast on GPU (bf16 weights would round away AdamW updates below half their spacing).
The result is a model artifact in the lake (`_artifacts/models/<id>/`, lineage: dataset,
manifest hash, base model, settings) and its logged metrics in `train_metrics`. Refused
before any weights load: a base model whose tokenizer is not that of the models that
generated the dataset (manifest `models`); stopped with nothing stored: a non-finite loss.

  sft   weighting `dataset`: the dataset's `weights`; `plain`: the loss mask (plain SFT)
  dpo   pairs; the reference is the frozen base model. Weighting `dataset`: the dataset's
        weights (cDPO: 1 − p_CE on rejected tokens); `plain`: the loss masks (DPO);
        `tgdpo`: TGDPO's (1 + α·β·r̂) on chosen and (1 − α·β·r̂) on rejected tokens, r̂ the
        pairs' `dpo` token rewards (β = 1: the log-ratio), β the training β (`losses.tgdpo_weights`)
  tdpo  pairs, weighting `plain` only: DPO plus TDPO's sequential-KL term (Zeng et al. 2024,
        `losses.tdpo_loss`; variant tdpo1 or tdpo2, α `tdpo_alpha`); the reference, the frozen
        base model, stays loaded beside the policy (its full next-token distributions are needed)
  dpo and tdpo take RPO's NLL term on the chosen tokens where `rpo_alpha` > 0 (`losses`)
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from tokenmill import datasets as D
from tokenmill import ids
from tokenmill.common_config import config_values
from tokenmill.tasks.train.weighted_config import TrainSettings, default_weighting
from tokenmill.engines.base import pad_rows
from tokenmill.engines.hf import load_hf
from tokenmill.errors import TokenmillError
from tokenmill import progress
from tokenmill.schema import TRAIN_METRICS
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.storage.artifacts import artifact_path, model_source, store_artifact
from tokenmill.tasks.train.losses import (keep_share, keep_top, tdpo_loss, tgdpo_weights, token_kl, token_logprobs,
                                          weighted_dpo_loss, weighted_nll, weighted_sft_loss)

MODEL_DIR = f"{ARTIFACTS_DIR}/models"


def _read(lake: Lake, dataset_id: str) -> tuple[dict, pa.Table]:
    path = D.local_path(lake, dataset_id)
    manifest = D.read_manifest(lake, dataset_id)
    return manifest, pa.concat_tables([pq.read_table(path / s) for s in manifest["shards"]])


WEIGHTINGS = {"sft": ("dataset", "plain"), "dpo": ("dataset", "plain", "tgdpo"), "tdpo": ("plain",)}
PAIR_OBJECTIVES = ("dpo", "tdpo")


def check_settings(objective: str, weighting: str, kind: str | None = None, where: str | None = None) -> None:
    """One clear error for an objective / weighting that does not exist or does not fit a
    dataset (or recipe) of `kind` (sequences | pairs)."""
    if objective not in WEIGHTINGS:
        raise TokenmillError(f"unknown objective {objective!r}", where=where, fix="use sft, dpo or tdpo")
    if weighting not in WEIGHTINGS[objective]:
        raise TokenmillError(f"{objective} has no weighting {weighting!r}", where=where,
                             fix=f"use one of {', '.join(WEIGHTINGS[objective])}")
    want = "pairs" if objective in PAIR_OBJECTIVES else "sequences"
    if kind is not None and kind != want:
        raise TokenmillError(f"{objective} needs a {want} dataset, this one holds {kind}", where=where,
                             fix="curate with dpo-pairs / cdpo-pairs for dpo and tdpo, a sequences recipe for sft")


def check_weighting(table: pa.Table, manifest: dict, objective: str, weighting: str) -> None:
    """One clear error for an objective / weighting the dataset cannot serve."""
    check_settings(objective, weighting, manifest["kind"], where=f"dataset {manifest['dataset_id']}")
    if table.num_rows == 0:
        raise TokenmillError(f"dataset {manifest['dataset_id']} is empty", fix="curate from runs with matching rollouts")
    if weighting == "tgdpo" and ("chosen_token_rewards" not in table.column_names
                                 or table.column("chosen_token_rewards").null_count == table.num_rows):
        raise TokenmillError(f"tgdpo needs token rewards; dataset {manifest['dataset_id']} has none",
                             fix="label the run with `--labelers rewards` (kind dpo, with a DPO model as the dpo role), "
                                 "then curate dpo-pairs again")


def check_tokenizer(lake: Lake, manifest: dict, table: pa.Table, base_model: str) -> None:
    """Refuse a base model whose tokenizer reads the dataset's token ids as other text (or
    has fewer of them: an IndexError in the embedding), before any weights are loaded."""
    from tokenmill.engines import load_tokenizer, tokenizer_difference

    models = manifest.get("models") or D.source_models(lake, table, manifest["runs"])  # manifests from before `models`
    base = load_tokenizer(model_source(lake, base_model))
    for model in models:
        if model == base_model:
            continue
        try:
            problem = tokenizer_difference(load_tokenizer(model_source(lake, model)), base)
        except TokenmillError:  # the generating model is gone from here: its token ids must at least exist
            problem = _ids_beyond(table, len(base))
        if problem:
            raise TokenmillError(
                f"train: base model {base_model} has a different tokenizer from {model}, whose rollouts dataset "
                f"{manifest['dataset_id']} holds: {problem}",
                fix=f"train a model with {model}'s tokenizer (e.g. --model {model}), or curate a dataset from rollouts "
                    f"of {base_model}")


def _ids_beyond(table: pa.Table, vocab: int) -> str | None:
    cols = [c for c in table.column_names if c.endswith("input_ids")]
    top = max((pc.max(pc.list_flatten(table.column(c))).as_py() or 0 for c in cols), default=0)
    return f"token ids up to {top}, vocabulary of {vocab}" if top >= vocab else None


def train_settings(settings: TrainSettings | None = None, **overrides) -> TrainSettings:
    """What a training runs with: `settings` (a TrainSettings or TrainConfig; TrainSettings'
    defaults where none), `overrides` on top. An objective or weighting that does not exist is
    check_settings' one clear error, before pydantic's."""
    values = default_weighting(config_values(TrainSettings, settings, overrides))
    draft = TrainSettings.model_construct(**values)
    check_settings(draft.objective, draft.weighting)
    return TrainSettings.model_validate(values)


def train_weighted(lake: Lake, dataset_id: str, base_model: str, objective: str | None = None, *,
                   settings: TrainSettings | None = None, run_id: str | None = None, log_every: int = 10,
                   **overrides) -> dict:
    """Train `base_model` on a dataset with `settings` (TrainSettings: the defaults live there;
    a TrainConfig gives its own), `objective` and keyword overrides (weighting, steps, lr, schedule,
    warmup, weight_decay, batch, grad_accum, beta, alpha, rpo_alpha, tdpo_alpha, tdpo_variant, seed) on top; returns the artifact record
    {artifact_id, path, …}."""
    s = train_settings(settings, **({"objective": objective} if objective is not None else {}), **overrides)
    objective, weighting, steps, lr, batch, grad_accum, beta, alpha, seed = (
        s.objective, s.weighting, s.steps, s.lr, s.batch, s.grad_accum, s.beta, s.alpha, s.seed)
    if s.keep_start is not None and (objective != "sft" or weighting != "dataset"):
        raise TokenmillError(f"the dynamic keep schedule (keep_start) ranks a sequences dataset's weights; not {objective} "
                             f"with weighting {weighting}", fix="drop --keep-start, or train sft with weighting dataset")
    manifest, table = _read(lake, dataset_id)
    check_weighting(table, manifest, objective, weighting)
    check_tokenizer(lake, manifest, table, base_model)
    if weighting == "tgdpo":  # pairs without guidance on both sides cannot be weighted
        table = table.filter(pc.is_valid(table.column("chosen_token_rewards")))
    params = {"objective": objective, "weighting": weighting, "steps": steps, "lr": lr, "batch": batch,
              "grad_accum": grad_accum, "beta": beta, "seed": seed, **({"alpha": alpha, "tgdpo_scale": "alpha*beta"} if weighting == "tgdpo" else {}),
              **({"tdpo_variant": s.tdpo_variant} if objective == "tdpo" else {}),
              **({"tdpo_alpha": s.tdpo_alpha} if objective == "tdpo" and s.tdpo_variant == "tdpo2" else {}),
              **({"keep_start": s.keep_start, "keep_end": s.keep_end} if s.keep_start is not None else {}),
              **({"schedule": s.schedule} if s.schedule != "constant" else {}),  # constant: ids as before the option
              **({"warmup": s.warmup} if s.warmup else {}), **({"weight_decay": s.weight_decay} if s.weight_decay else {}),
              **({"rpo_alpha": s.rpo_alpha} if s.rpo_alpha and objective in PAIR_OBJECTIVES else {})}
    # tgdpo_scale: models trained with the earlier 1 ± α·r̂ weights keep their own ids
    aid = ids.content_id("weighted-train", base_model, dataset_id, ids.canonical_json(params))
    rel = f"{MODEL_DIR}/{aid}"
    run_id = run_id or manifest["runs"][0]
    record = {"artifact_id": aid, "path": rel, "base_model": base_model, "dataset_id": dataset_id, **params}
    if lake.has_dir(rel):
        return {**record, "local_path": artifact_path(lake, rel), "reused": True}
    torch.manual_seed(seed)
    source = model_source(lake, base_model)  # what loads it: an earlier arm's lake model from its local copy
    rng = random.Random(seed)
    cuda = torch.cuda.is_available()
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    cols = {c: table.column(c).to_pylist() for c in table.column_names
            if c.endswith(("input_ids", "weights", "loss_mask", "token_rewards"))}
    # every micro-batch is drawn up front (the same seeded sequence as drawing them one by one)
    draws = [[rng.randrange(table.num_rows) for _ in range(batch)] for _ in range(steps * grad_accum)]
    t0 = time.time()
    ref_logps = _reference_logps(source, cols, draws, batch, amp) if objective == "dpo" else None
    # TDPO's KL term needs the reference's whole next-token distribution at every completion
    # position of every step: precomputed like `_reference_logps`, that is rows × tokens ×
    # vocabulary floats (SmolLM2's 49k vocabulary: ~100 MB per 512-token sequence), so the
    # reference stays loaded instead and runs on each micro-batch (memory: policy + optimizer
    # state + reference weights). Frozen: eval mode, no gradients; float32 like the policy.
    ref_model = _frozen(source) if objective == "tdpo" else None
    model, tok, _ = load_hf(source, dtype="float32")
    dev = model.device
    model.train()
    opt = torch.optim.AdamW(param_groups(model, s.weight_decay), lr=lr, weight_decay=s.weight_decay)
    warm = math.ceil(s.warmup * steps)
    metrics, seen = [], 0
    progress.start(f"train {objective}", steps)
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        total, margins = 0.0, []
        for micro in range((step - 1) * grad_accum, step * grad_accum):
            idx = draws[micro]
            with amp():  # forward only: one context per step (autocast caches its weight casts)
                if objective == "sft":
                    share = None if s.keep_start is None else keep_share(step, steps, s.keep_start, s.keep_end)
                    loss, n = _sft_step(model, cols, idx, weighting, tok.pad_token_id, dev, share)
                elif objective == "tdpo":
                    loss, n, margin = _tdpo_step(model, ref_model, cols, idx, beta, s.tdpo_alpha, s.tdpo_variant,
                                                 tok.pad_token_id, dev, s.rpo_alpha)
                    margins.append(margin)
                else:
                    loss, n, margin = _dpo_step(model, ref_logps, cols, idx, weighting, beta, alpha,
                                                tok.pad_token_id, dev, s.rpo_alpha)
                    margins.append(margin)
            (loss / grad_accum).backward()
            total += loss.item() / grad_accum
            seen += n
        if not np.isfinite(total):  # diverged: every later step and the stored model would be NaN
            raise TokenmillError(f"train: loss is {total} at step {step}",
                                 where=f"dataset {dataset_id}, base model {base_model}", fix=f"lower --lr (now {lr:g})")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        step_lr = lr * lr_factor(step, steps, s.schedule, warm)  # warm-up, then constant or linear decay
        for group in opt.param_groups:
            group["lr"] = step_lr
        opt.step()
        progress.advance(f"train {objective}")
        if step % log_every == 0 or step == steps:
            metrics.append({"artifact_id": aid, "dataset_id": dataset_id, "objective": objective, "step": step,
                            "loss": total, "lr": step_lr, "tokens": seen, "seconds": time.time() - t0,
                            "margin": float(np.mean(margins)) if margins else None})
    model.eval()
    del ref_model

    def save(tmp: str) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    store_artifact(lake, run_id, rel, save, artifact_id=aid, role=objective, base_model=base_model,
                   train_rollouts=manifest["rows"], train_tokens=seen, steps=steps, final_loss=metrics[-1]["loss"],
                   lineage={"method": f"weighted-{objective}", "dataset_id": dataset_id, "recipe": manifest["recipe"],
                            "dataset_hash": manifest["content_hash"], "runs": manifest["runs"], "train": params},
                   rows={"train_metrics": pa.Table.from_pylist(metrics, schema=TRAIN_METRICS.schema)})
    return {**record, "local_path": artifact_path(lake, rel), "reused": False, "final_loss": metrics[-1]["loss"],
            "tokens": seen, "seconds": round(time.time() - t0, 1)}


def lr_factor(step: int, steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """The learning rate's factor at `step` (1 … steps), HF's schedules with k = step − 1 their
    `current_step`: k / W during the W warm-up steps (the first step at 0), then 1 (constant)
    or (steps − k) / (steps − W) (linear: step 1 after warm-up at lr, the last at lr / (steps − W))."""
    k = step - 1
    if k < warmup_steps:
        return k / warmup_steps
    if schedule != "linear":
        return 1.0
    if not warmup_steps:  # the arithmetic from before warm-up existed: those models retrain bit for bit
        return 1.0 - k / steps
    return max(0.0, (steps - k) / (steps - warmup_steps))


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: weight decay on every weight but biases and norms, by HF
    Trainer's own rule (`get_decay_parameter_names`, which reads nothing of the trainer)."""
    params = dict(model.named_parameters())
    if not weight_decay:
        return [{"params": list(params.values())}]
    from transformers import Trainer

    decayed = set(Trainer.get_decay_parameter_names(None, model))
    return [{"params": [p for n, p in params.items() if n in decayed], "weight_decay": weight_decay},
            {"params": [p for n, p in params.items() if n not in decayed], "weight_decay": 0.0}]


def _rows(cols, key, idx, dev):
    return pad_rows([cols[key][i] for i in idx], 0.0, torch.float32)[0].to(dev)


def _sft_step(model, cols, idx, weighting, pad_id, dev, share=None):
    ids_, attn = (t.to(dev) for t in pad_rows([cols["input_ids"][i] for i in idx], pad_id))
    w = _rows(cols, "loss_mask" if weighting == "plain" else "weights", idx, dev)
    if share is not None:
        w = keep_top(w, share)
    logits = model(input_ids=ids_, attention_mask=attn).logits
    return weighted_sft_loss(logits, ids_, w), int((w[:, 1:] > 0).sum())


def _side_logps(model, cols, side, idx, pad_id, dev):
    ids_, attn = (t.to(dev) for t in pad_rows([cols[f"{side}_input_ids"][i] for i in idx], pad_id))
    return token_logprobs(model(input_ids=ids_, attention_mask=attn).logits, ids_)


def _reference_logps(base_model, cols, draws, batch, amp) -> dict:
    """{side: {row: [L] log-probs}}: the frozen reference's per-token log-probs of every row the
    draws use, computed before the policy loads and the reference freed after, so policy,
    reference and optimizer state are never in memory together (SmolLM2 DPO peaked at 6.1 GiB
    with both; TRL's `precompute_ref_log_probs` does the same). Kept per row, trimmed to its
    length: memory is that of the dataset's own token ids, not of steps × batch."""
    ref, tok, _ = load_hf(base_model, dtype="float32")
    rows = sorted({i for idx in draws for i in idx})
    out: dict = {"chosen": {}, "rejected": {}}
    with torch.no_grad(), amp():
        for k in range(0, len(rows), batch):
            chunk = rows[k:k + batch]
            for side in out:
                lp = _side_logps(ref, cols, side, chunk, tok.pad_token_id, ref.device).float().cpu()
                for j, i in enumerate(chunk):
                    out[side][i] = lp[j, :len(cols[f"{side}_input_ids"][i])].numpy()
    del ref
    gc.collect()
    return out


def _dpo_step(model, ref_logps, cols, idx, weighting, beta, alpha, pad_id, dev, rpo_alpha=0.0):
    sides = ("chosen", "rejected")
    if weighting == "tgdpo":
        w = dict(zip(sides, tgdpo_weights(*(_rows(cols, f"{s}_token_rewards", idx, dev) for s in sides),
                                          *(_rows(cols, f"{s}_loss_mask", idx, dev) for s in sides), alpha, beta)))
    else:
        key = "loss_mask" if weighting == "plain" else "weights"
        w = {s: _rows(cols, f"{s}_{key}", idx, dev) for s in sides}
    pol = {s: _side_logps(model, cols, s, idx, pad_id, dev) for s in ("chosen", "rejected")}
    rlp = {s: pad_rows([ref_logps[s][i] for i in idx], 0.0, torch.float32)[0].to(dev) for s in sides}
    loss, margin = weighted_dpo_loss(pol["chosen"], rlp["chosen"], pol["rejected"], rlp["rejected"], w["chosen"],
                                     w["rejected"], beta)
    if rpo_alpha:
        loss = loss + rpo_alpha * weighted_nll(pol["chosen"], _rows(cols, "chosen_loss_mask", idx, dev))
    n = sum(int(_rows(cols, f"{s}_loss_mask", idx, "cpu").sum()) for s in sides)
    return loss, n, margin.mean().item()


def _frozen(base_model):
    ref, _, _ = load_hf(base_model, dtype="float32")
    ref.eval().requires_grad_(False)
    return ref


def _tdpo_step(model, ref, cols, idx, beta, alpha, variant, pad_id, dev, rpo_alpha=0.0):
    """TDPO on one micro-batch: per side, the policy's and the reference's logits of the same
    tokens, their per-token log-probs and KL(π_ref ‖ π_θ); the reference's logits are freed
    before the other side runs."""
    sides = ("chosen", "rejected")
    out = {}
    for s in sides:
        ids_, attn = (t.to(dev) for t in pad_rows([cols[f"{s}_input_ids"][i] for i in idx], pad_id))
        logits = model(input_ids=ids_, attention_mask=attn).logits
        with torch.no_grad():
            ref_logits = ref(input_ids=ids_, attention_mask=attn).logits
            ref_lp = token_logprobs(ref_logits, ids_)
        out[s] = (token_logprobs(logits, ids_), ref_lp, token_kl(logits, ref_logits, ids_),
                  _rows(cols, f"{s}_loss_mask", idx, dev))
        del ref_logits
    (pc, rc, klc, mc), (pr, rr, klr, mr) = out["chosen"], out["rejected"]
    loss, margin = tdpo_loss(pc, rc, pr, rr, klc, klr, mc, mr, beta, alpha, variant)
    if rpo_alpha:
        loss = loss + rpo_alpha * weighted_nll(pc, mc)
    n = int(mc.sum() + mr.sum())
    return loss, n, margin.mean().item()
