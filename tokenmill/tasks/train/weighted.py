"""Token-weighted SFT and DPO on any transformers causal LM, from a curated dataset.

Both read a dataset written by `tokenmill curate` (`tokenmill/datasets.py`), draw batches
with a seeded RNG, right-pad them, and optimise the losses in `losses.py` with AdamW,
gradient accumulation and gradient clipping; fp32 on CPU, bf16 on GPU (the same code).
The result is a model artifact in the lake (`_artifacts/models/<id>/`, lineage: dataset,
manifest hash, base model, settings) and its logged metrics in `train_metrics`.

  sft   weights from the dataset (`weights`), or the plain loss mask with `plain=True`
  dpo   pairs; the reference is the frozen base model; weights from the dataset
        (cDPO: 1 − p_CE on rejected tokens) or the loss masks with `plain=True` (DPO)
"""

from __future__ import annotations

import random
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tokenmill import datasets as D
from tokenmill import ids
from tokenmill.engines.base import pad_rows
from tokenmill.engines.hf import load_hf
from tokenmill.errors import TokenmillError
from tokenmill.schema import TRAIN_METRICS
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.artifacts import artifact_path, store_artifact
from tokenmill.tasks.train.losses import token_logprobs, weighted_dpo_loss, weighted_sft_loss

MODEL_DIR = "_artifacts/models"


def _read(lake: Lake, dataset_id: str) -> tuple[dict, pa.Table]:
    path = D.local_path(lake, dataset_id)
    manifest = D.read_manifest(lake, dataset_id)
    return manifest, pa.concat_tables([pq.read_table(path / s) for s in manifest["shards"]])


def train_weighted(lake: Lake, dataset_id: str, base_model: str, objective: str = "sft", plain: bool = False,
                   steps: int = 100, lr: float = 5e-5, batch: int = 8, grad_accum: int = 1, beta: float = 0.1,
                   seed: int = 0, run_id: str | None = None, log_every: int = 10) -> dict:
    """Train `base_model` on a dataset; returns the artifact record {artifact_id, path, …}."""
    manifest, table = _read(lake, dataset_id)
    want = "pairs" if objective == "dpo" else "sequences"
    if objective not in ("sft", "dpo"):
        raise TokenmillError(f"unknown objective {objective!r}", fix="use sft or dpo")
    if manifest["kind"] != want:
        raise TokenmillError(f"{objective} needs a {want} dataset; {dataset_id} holds {manifest['kind']}",
                             fix="curate with cdpo-pairs for dpo, a sequences recipe for sft")
    if table.num_rows == 0:
        raise TokenmillError(f"dataset {dataset_id} is empty", fix="curate from runs with matching rollouts")
    params = {"objective": objective, "plain": plain, "steps": steps, "lr": lr, "batch": batch, "grad_accum": grad_accum,
              "beta": beta, "seed": seed}
    aid = ids.content_id("weighted-train", base_model, dataset_id, ids.canonical_json(params))
    rel = f"{MODEL_DIR}/{aid}"
    run_id = run_id or manifest["runs"][0]
    record = {"artifact_id": aid, "path": rel, "base_model": base_model, "dataset_id": dataset_id, **params}
    if lake.has_dir(rel):
        return {**record, "local_path": artifact_path(lake, rel), "reused": True}
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cuda = torch.cuda.is_available()
    model, tok, _ = load_hf(base_model, dtype="bfloat16" if cuda else "float32")
    ref = load_hf(base_model, dtype="bfloat16" if cuda else "float32")[0] if objective == "dpo" else None
    dev = model.device
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c.endswith(("input_ids", "weights", "loss_mask"))}
    metrics, seen, t0 = [], 0, time.time()
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        total, margins = 0.0, []
        for _ in range(grad_accum):
            idx = [rng.randrange(table.num_rows) for _ in range(batch)]
            if objective == "sft":
                loss, n = _sft_step(model, cols, idx, plain, tok.pad_token_id, dev)
            else:
                loss, n, margin = _dpo_step(model, ref, cols, idx, plain, beta, tok.pad_token_id, dev)
                margins.append(margin)
            (loss / grad_accum).backward()
            total += loss.item() / grad_accum
            seen += n
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps:
            metrics.append({"artifact_id": aid, "dataset_id": dataset_id, "objective": objective, "step": step,
                            "loss": total, "lr": lr, "tokens": seen, "seconds": time.time() - t0,
                            "margin": float(np.mean(margins)) if margins else None})
    model.eval()

    def save(tmp: str) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    store_artifact(lake, run_id, rel, save, artifact_id=aid, role=objective, base_model=base_model,
                   train_rollouts=manifest["rows"], train_tokens=seen, steps=steps, final_loss=metrics[-1]["loss"],
                   lineage={"method": f"weighted-{objective}", "dataset_id": dataset_id, "recipe": manifest["recipe"],
                            "dataset_hash": manifest["content_hash"], "runs": manifest["runs"], "train": params})
    lake.commit("train_metrics", run_id, pa.Table.from_pylist(metrics, schema=TRAIN_METRICS.schema))
    return {**record, "local_path": artifact_path(lake, rel), "reused": False, "final_loss": metrics[-1]["loss"],
            "tokens": seen, "seconds": round(time.time() - t0, 1)}


def _sft_step(model, cols, idx, plain, pad_id, dev):
    ids_, attn = (t.to(dev) for t in pad_rows([cols["input_ids"][i] for i in idx], pad_id))
    key = "loss_mask" if plain else "weights"
    w = pad_rows([cols[key][i] for i in idx], 0.0, torch.float32)[0].to(dev)
    logits = model(input_ids=ids_, attention_mask=attn).logits
    return weighted_sft_loss(logits, ids_, w), int((w[:, 1:] > 0).sum())


def _side_logps(model, cols, side, idx, pad_id, dev):
    ids_, attn = (t.to(dev) for t in pad_rows([cols[f"{side}_input_ids"][i] for i in idx], pad_id))
    return token_logprobs(model(input_ids=ids_, attention_mask=attn).logits, ids_)


def _dpo_step(model, ref, cols, idx, plain, beta, pad_id, dev):
    key = "loss_mask" if plain else "weights"
    w = {s: pad_rows([cols[f"{s}_{key}"][i] for i in idx], 0.0, torch.float32)[0].to(dev) for s in ("chosen", "rejected")}
    pol = {s: _side_logps(model, cols, s, idx, pad_id, dev) for s in ("chosen", "rejected")}
    with torch.no_grad():
        rlp = {s: _side_logps(ref, cols, s, idx, pad_id, dev) for s in ("chosen", "rejected")}
    loss, margin = weighted_dpo_loss(pol["chosen"], rlp["chosen"], pol["rejected"], rlp["rejected"], w["chosen"],
                                     w["rejected"], beta)
    return loss, int((w["chosen"] > 0).sum() + (w["rejected"] > 0).sum()), margin.mean().item()
