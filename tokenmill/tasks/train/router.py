"""R2R's router: which tokens the small model should hand to the large model.

Inputs at step t (the small model's view when it predicts token t, R2R §4):
  s_t   final normalised hidden state (what the LM head reads), [d]
  e_t   input embedding of its argmax token ŷ_t, [d]
  z_t   its top-k raw logits, descending, taken relative to the top-1 (z_t − z_t,1: the
        softmax-relevant shape, invariant to the logits' offset), [k]
Model: each input projected to `width`, concatenated → LayerNorm → residual GELU MLP
blocks → one logit g_t; route to the large model when σ(g_t) ≥ τ.

Training: labels y_t = 1 for divergent tokens (`routing.label = 2`), 0 for identical and
neutral; undecidable tokens (label 3) are left out. Loss BCE with pos_weight = n_neg / n_pos (R2R:
divergent tokens are rare, `recall_factor` 1). The validation split holds whole prompts out.

Where tokenmill's default (`recipe = "tokenmill"`) differs from R2R's training
(thu-nics/R2R resource/default_training_config.json, script/train/train_router.py, commit
560f5ec; `recipe = "r2r"` takes R2R's settings, `router_config.R2R_ROUTER`):
  size        2 residual blocks of width 256 (×2 expansion), inputs projected to 128 each —
              R2R: 6 blocks of 1024 (×4), for 1.5B-model hidden states; sized here for the
              bundled models' 64–128-wide states, where R2R's router is 200× their size
  training    600 AdamW steps of 256 random tokens, lr 1e-3, weight decay 0.01, the last
              step kept — R2R: up to 50 epochs of batch 1024, lr 5e-5, weight decay 5e-4,
              early stopping after 10 epochs without a lower validation loss, the best kept
  validation  one held-out split of prompts sets the threshold (and, with epochs, picks the
              epoch) — R2R keeps a separate test split for the threshold
  inputs      the same three (hidden state, token embedding, top-k logits; R2R k = 100, set
              by the routing labeller's `top_k`); R2R's LM-head-initialised token embedding is
              the small model's input embedding here, frozen as R2R's `freeze_lm_head`. Threshold τ: the lowest positive rate whose
recall on validation divergent tokens is ≥ `recall` (0.95), i.e. the largest τ with
|{p ≥ τ, y = 1}| ≥ ⌈recall · n_pos⌉.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.compute as pc
import torch
from torch import nn

from tokenmill import ids
from tokenmill.common_config import resolve
from tokenmill.tasks.train.router_config import RouterConfig
from tokenmill.errors import TokenmillError
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.storage.catalog import only_config
from tokenmill.storage.artifacts import artifact_path, store_artifact
from tokenmill.tasks.train.metrics import split_by_prompt

ROUTER_DIR = f"{ARTIFACTS_DIR}/routers"
_LATER_SETTINGS = ("recipe", "epochs", "patience", "weight_decay", "width", "hidden", "blocks", "expansion")

TRAIN_SQL = """
SELECT r.rollout_id, f.state, f.top_logits, f.pred_id, (r.label = 2) AS y, ro.prompt_id, r.small_model, r.large_model
FROM routing r
JOIN router_features f ON f.run_id = r.run_id AND f.rollout_id = r.rollout_id AND f.pos = r.pos AND f.model = r.small_model
JOIN rollouts ro ON ro.run_id = r.run_id AND ro.rollout_id = r.rollout_id
WHERE r.run_id = $run AND ($cfg IS NULL OR r.config_id = $cfg) AND r.label <> 3  -- undecidable: no target
ORDER BY r.rollout_id, r.pos
"""


class Router(nn.Module):
    def __init__(self, d_state: int, d_emb: int, k: int, width: int = 128, hidden: int = 256, blocks: int = 2,
                 dropout: float = 0.1, expansion: int = 2):
        super().__init__()
        self.dims = {"d_state": d_state, "d_emb": d_emb, "k": k, "width": width, "hidden": hidden, "blocks": blocks,
                     "dropout": dropout, "expansion": expansion}
        self.state_proj, self.emb_proj, self.logit_proj = nn.Linear(d_state, width), nn.Linear(d_emb, width), nn.Linear(k, width)
        self.inp = nn.Sequential(nn.LayerNorm(3 * width), nn.Linear(3 * width, hidden))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, expansion * hidden), nn.GELU(),
                                                  nn.Dropout(dropout), nn.Linear(expansion * hidden, hidden))
                                    for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor, emb: torch.Tensor, top_logits: torch.Tensor) -> torch.Tensor:
        rel = top_logits - top_logits[:, :1]
        x = self.inp(torch.cat([self.state_proj(state), self.emb_proj(emb), self.logit_proj(rel)], -1))
        for block in self.blocks:
            x = x + block(x)
        return self.out(x).squeeze(-1)


def recall_threshold(p: np.ndarray, y: np.ndarray, recall: float) -> tuple[float, float, float]:
    """(τ, positive rate, recall achieved): the largest τ whose rule p ≥ τ catches at least
    `recall` of the positives — the lowest positive rate with that recall."""
    n_pos = int(y.sum())
    if n_pos == 0:
        raise TokenmillError("router: the validation split has no divergent tokens to set the threshold on",
                             fix="label more trajectories (more prompts) or lower --val-frac")
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(y[order])
    m = int(np.searchsorted(tp, math.ceil(recall * n_pos)))  # first index reaching the needed positives
    tau = float(p[order][m])
    fired = p >= tau  # ties at τ fire too
    return tau, float(fired.mean()), float(y[fired].sum() / n_pos)


def load_training_data(lake: Lake, run_id: str, config: str | None = None) -> dict:
    if config is None:  # two labellings of the same tokens must not be trained on as one
        config = only_config(lake, "routing", run_id, "router", fix="pick one with --config <config id>")
    t = query(lake, TRAIN_SQL, {"run": run_id, "cfg": config})
    if t.num_rows == 0:
        raise TokenmillError(f"router: run {run_id!r} has no routing labels with features",
                             fix=f"run `tokenmill label --run {run_id} --labelers routing` first")
    smalls = pc.unique(t.column("small_model")).to_pylist()
    if len(smalls) > 1:
        raise TokenmillError(f"router: run {run_id!r} has routing labels of several small models {smalls}",
                             fix="pass --config to pick one labelling")

    def matrix(col: str) -> np.ndarray:
        flat = pc.list_flatten(t.column(col)).to_numpy(zero_copy_only=False).astype(np.float32)
        return flat.reshape(t.num_rows, -1)

    return {"state": matrix("state"), "top_logits": matrix("top_logits"),
            "pred_id": t.column("pred_id").to_numpy().astype(np.int64), "y": t.column("y").to_numpy(zero_copy_only=False).astype(np.float32),
            "prompt_id": t.column("prompt_id").to_pylist(), "small": smalls[0], "config": config,
            "rollouts": len(pc.unique(t.column("rollout_id"))), "large": pc.unique(t.column("large_model")).to_pylist()}


def train_router(lake: Lake, run_id: str, config: str | None = None, settings: RouterConfig | None = None,
                 **overrides) -> dict:
    """Train R2R's router on a run's routing labels and store it as an artifact; returns
    its record (artifact id, path, threshold, validation metrics). Reused if present.
    `settings` (RouterConfig: the defaults live there) with keyword overrides (steps, lr,
    batch, val_frac, recall, seed) on top; `config`: the routing labels' config id (default:
    settings.config_id, else the run's only one)."""
    from tokenmill.tasks.generate import cached_engine

    s = resolve(RouterConfig, settings, **{"run_id": run_id, **overrides})
    config = config if config is not None else s.config_id
    steps, lr, batch, val_frac, recall, seed = s.steps, s.lr, s.batch, s.val_frac, s.recall, s.seed
    data = load_training_data(lake, run_id, config)
    config = data["config"]  # the labelling trained on, also when the run's only one was taken
    params = {"steps": steps, "lr": lr, "batch": batch, "val_frac": val_frac, "recall": recall, "seed": seed}
    # settings added later enter the id only where they differ from the defaults: earlier routers keep their ids
    defaults = RouterConfig.model_fields
    params |= {k: getattr(s, k) for k in _LATER_SETTINGS if getattr(s, k) != defaults[k].default}
    aid = ids.content_id("router", run_id, str(config), ids.canonical_json(params), str(len(data["y"])), str(data["y"].sum()))
    rel = f"{ROUTER_DIR}/{aid}"
    if lake.has_dir(rel):
        return load_router_meta(lake, rel)
    val = split_by_prompt(data["prompt_id"], val_frac, seed)
    if val.all() or not val.any():
        raise TokenmillError(f"router: {len(set(data['prompt_id']))} prompts cannot be split into train and validation",
                             fix="label more prompts")
    small = cached_engine("hf", data["small"])
    emb_table = small.model.get_input_embeddings().weight.detach().float().cpu()
    x = {k: torch.from_numpy(data[k]) for k in ("state", "top_logits")}
    x["emb"] = emb_table[torch.from_numpy(data["pred_id"]).long()]
    y = torch.from_numpy(data["y"])
    tr, va = torch.from_numpy(~val), torch.from_numpy(val)
    n_pos = float(y[tr].sum())
    if n_pos == 0:
        raise TokenmillError("router: the training split has no divergent tokens", fix="label more trajectories")
    torch.manual_seed(seed)
    model = Router(x["state"].shape[1], x["emb"].shape[1], x["top_logits"].shape[1], s.width, s.hidden, s.blocks,
                   expansion=s.expansion)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=s.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((float(tr.sum()) - n_pos) / n_pos))
    idx = torch.nonzero(tr).squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    losses, epochs_run = [], None

    def step(b):
        loss = loss_fn(model(x["state"][b], x["emb"][b], x["top_logits"][b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    model.train()
    if s.epochs is None:
        for _ in range(steps):
            step(idx[torch.randint(len(idx), (min(batch, len(idx)),), generator=gen)])
    else:  # R2R: epochs over the shuffled training tokens; the epoch of lowest validation loss is kept
        best, best_state, since = math.inf, None, 0
        for epoch in range(s.epochs):
            for b in idx[torch.randperm(len(idx), generator=gen)].split(batch):
                step(b)
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model(x["state"][va], x["emb"][va], x["top_logits"][va]), y[va]))
            model.train()
            if val_loss < best:
                best, since, epochs_run = val_loss, 0, epoch + 1
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                since += 1
                if s.patience is not None and since >= s.patience:
                    break
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        p_val = torch.sigmoid(model(x["state"][va], x["emb"][va], x["top_logits"][va])).numpy()
    tau, rate, rec = recall_threshold(p_val, data["y"][val], recall)
    meta = {"artifact_id": aid, "path": rel, "small_model": data["small"], "large_models": data["large"], "threshold": tau, "dims": model.dims,
            "val": {"tokens": int(val.sum()), "divergent": int(data["y"][val].sum()), "positive_rate": rate, "recall": rec,
                    "divergent_rate": float(data["y"][val].mean())},
            "train": {"tokens": int(tr.sum()), "divergent": int(n_pos), **params,
                      **({"best_epoch": epochs_run} if epochs_run is not None else {})},
            "run_id": run_id, "config_id": config}

    def save(tmp: str) -> None:
        torch.save(model.state_dict(), os.path.join(tmp, "router.pt"))
        with open(os.path.join(tmp, "router.json"), "w") as f:
            json.dump(meta, f, indent=1)

    store_artifact(lake, run_id, rel, save, artifact_id=aid, role="router", base_model=data["small"],
                   train_rollouts=data["rollouts"], train_tokens=int(tr.sum()), steps=steps, final_loss=float(np.mean(losses[-20:])),
                   lineage={"method": "r2r-router", "run_id": run_id, "routing_config": config, "train": params})
    return meta


def load_router_meta(lake: Lake, rel: str) -> dict:
    with open(os.path.join(artifact_path(lake, rel), "router.json")) as f:
        return json.load(f)


def load_router(lake: Lake, rel: str) -> tuple[Router, dict]:
    """(router in eval mode, its record) from the lake path of a stored router."""
    local = artifact_path(lake, rel)
    meta = load_router_meta(lake, rel)
    d = meta["dims"]
    model = Router(d["d_state"], d["d_emb"], d["k"], d["width"], d["hidden"], d["blocks"], d["dropout"], d.get("expansion", 2))
    model.load_state_dict(torch.load(os.path.join(local, "router.pt"), weights_only=True))
    return model.eval(), meta
