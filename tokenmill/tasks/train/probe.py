"""Hallucination probe (Obeso et al. 2025, "Real-Time Detection of Hallucinated Entities
in Long-Form Generation"): a linear value head on one layer's hidden states.

  p_t = σ(w · h_t + b)                  h_t: the generating model's layer-ℓ state at token t

Trained on the `hallucination_tokens` format (y_t = 1 inside not-supported spans, 0 inside
supported ones; tokens outside every span 0, as upstream's long-form setting labels them;
unverifiable spans ignored) with, as obalcells/hallucination_probes' trainer runs it,

  L = (1 − λ_s) · L_token + λ_s · L_span
  L_token = mean over labelled tokens of ω_t · BCE(w·h_t + b, y_t), ω_t = 10 on span tokens
            (upstream's pos/neg weights), 1 elsewhere
  L_span  = mean over labelled spans S of BCE(max_{t ∈ S} (w·h_t + b), y_S)
  λ_s     = λ_max · min(1, s / (anneal · steps)), λ_max = 1, anneal = 1 (upstream's
            anneal_warmup): annealed from token-level to span-level over the whole run

tokenmill's earlier recipe stays available by name of its settings: `outside="ignore"`,
`token_weighting="balanced"` (positives weighted n_neg / n_pos), λ_max = 0.5, anneal = 0.5.

(the span-max term asks one confident token per hallucinated entity instead of every
token; the annealing lets the token loss shape the direction first).

`kind="lora"` is upstream's LoRA probe: the same head and loss, trained with LoRA adapters
on the layers up to ℓ and a KL term to the base model (`probe_lora.py` writes out its
formula and recipe). The linear probe reads the stored hidden states, standardised with
the training split's mean and std, full-batch; the LoRA probe runs the model itself.

Splits, all by whole prompts of the labelled spans, ranked by a seeded hash u(p) ∈ [0, 1):
held out u < val_frac (at least two prompts); of those, the lowest-ranked threshold_frac
(at least one, never all) are validation, the rest test; token rows follow their prompt
(`prompt_splits`). The
threshold maximises span-level F1 on validation, and nothing else is read there; every
reported figure is the test split's: ROC AUC at span level (probe: max p_t over the span)
next to each uncertainty score (1 − min prob, 1 − mean prob, mean entropy, 1 − CCP,
1 − consistency) and at token level next to 1 − p(token) and entropy (`probe_eval`, the
ROC curves), and the span F1 at the validation threshold. The probe's record keeps both
F1s (`val_span_f1`, `test_span_f1`), the threshold, the layer, the kind and each split's
prompts and spans. (Upstream classifies at a fixed 0.5 on separate test sets and tunes
nothing.) An AUC that is undefined (the test rows hold one class, or a method has no
scores: entropy of vLLM rollouts) is null in `probe_eval` and in the record, never NaN.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from tokenmill import ids
from tokenmill.common_config import resolve
from tokenmill.tasks.train.probe_config import ProbeConfig
from tokenmill.errors import TokenmillError
from tokenmill.schema import PROBE_EVAL
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.storage.catalog import only_config
from tokenmill.storage.artifacts import artifact_path, store_artifact
from tokenmill.tasks.train.metrics import auc_or_none, split_hash
from tokenmill.tasks.train.probe_loss import probe_loss, span_index, span_max, token_targets  # noqa: F401 (re-exported)

PROBE_DIR = f"{ARTIFACTS_DIR}/probes"
HELDOUT_FILE = "heldout.parquet"  # test-split scores per level and method, for ROC curves
SPAN_BASELINES = {"1 - min_prob": ("min_prob", -1), "1 - mean_prob": ("mean_prob", -1), "mean_entropy": ("mean_entropy", 1),
                  "1 - ccp": ("ccp", -1), "1 - consistency": ("consistency", -1)}

TOKENS_SQL = """
SELECT ht.rollout_id, ht.pos, ht.label, ht.spans, ht.prob, ht.entropy, h.hidden, r.prompt_id
FROM hallucination_tokens ht
JOIN rollouts r ON r.run_id = ht.run_id AND r.rollout_id = ht.rollout_id
JOIN hidden_states h ON h.run_id = ht.run_id AND h.rollout_id = ht.rollout_id AND h.pos = ht.pos
     AND h.model = 'policy' AND h.layer = $layer
WHERE ht.run_id = $run AND ht.config_id = $cfg AND r.model = $model
ORDER BY ht.rollout_id, ht.pos
"""
LABELS_SQL = """
SELECT ht.rollout_id, ht.pos, ht.label, ht.spans, ht.prob, ht.entropy, r.prompt_id
FROM hallucination_tokens ht
JOIN rollouts r ON r.run_id = ht.run_id AND r.rollout_id = ht.rollout_id
WHERE ht.run_id = $run AND ht.config_id = $cfg AND r.model = $model AND list_contains($rollouts, ht.rollout_id)
ORDER BY ht.rollout_id, ht.pos
"""
SPANS_SQL = """
SELECT s.rollout_id, r.prompt_id, s.start_pos, s.end_pos, s.label = 'not_supported' AS y,
       s.min_prob, s.mean_prob, s.mean_entropy, s.ccp, s.consistency
FROM hallucination_spans s JOIN rollouts r ON r.run_id = s.run_id AND r.rollout_id = s.rollout_id
WHERE s.run_id = $run AND s.config_id = $cfg AND r.model = $model
      AND s.label IN ('supported', 'not_supported') AND s.start_pos <= s.end_pos
ORDER BY s.rollout_id, s.span_id
"""


class ProbeDataError(TokenmillError):
    """A model's labelled spans cannot support a probe (none, or from too few prompts to fill
    the train, validation and test splits). The flow skips such a model when it picked the models itself."""


def hallucination_config(lake: Lake, run_id: str, config: str | None) -> str:
    """The given config (checked to exist) or the run's only hallucination config."""
    if config is None:
        config = only_config(lake, "hallucination_spans", run_id, "probe", fix="pick one with --config <config id>")
        if config is None:
            raise TokenmillError(f"probe: run {run_id!r} has no hallucination spans",
                                 fix=f"run `tokenmill label --run {run_id} --labelers hallucination` first")
        return config
    cfgs = query(lake, "SELECT DISTINCT config_id FROM hallucination_spans WHERE run_id = $run ORDER BY 1",
                 {"run": run_id}).column("config_id").to_pylist()
    if config not in cfgs:
        raise TokenmillError(f"probe: no hallucination spans of config {config!r}", fix=f"configs: {', '.join(cfgs) or 'none'}")
    return config


def absolute_layer(model: str, layer: int) -> int:
    """hidden_states index (0 = embeddings … L = last layer) of `layer`, negative from the end."""
    from transformers import AutoConfig

    from tokenmill.models.registry import resolve_model

    n = AutoConfig.from_pretrained(resolve_model(model).path).num_hidden_layers
    if not -(n + 1) <= layer <= n:
        raise TokenmillError(f"probe: {model} has hidden states 0…{n}, not layer {layer}", fix=f"pick a layer in 0…{n} or −1…−{n + 1}")
    return layer % (n + 1)


def ensure_hidden_states(lake: Lake, run_id: str, model: str, layer: int, rollout_ids: pa.Array) -> None:
    """Score the policy's layer-`layer` states of `rollout_ids` where the lake lacks them."""
    from tokenmill.tasks import score as score_stage

    where = (pc.field("model") == model) & pc.field("rollout_id").isin(rollout_ids)
    for shard in lake.files("rollouts", run_id):
        score_stage.score_shard(lake, run_id, shard, {"policy": score_stage.POLICY}, hidden_layer=layer, where=where)


def prompt_splits(prompt_ids: list[str], val_frac: float, threshold_frac: float, seed: int) -> dict[str, str]:
    """Each distinct prompt → "train", "val" or "test". Prompts are ranked by their seeded
    hash u(p) ∈ [0, 1); the held-out ones are those with u(p) < val_frac — the split the
    probe always had — topped up from the lowest ranks to two prompts when fewer fall there
    (and at least one prompt is left to train on). The lowest-ranked round(threshold_frac ·
    held) of them, at least one and never all, are the validation split where the
    threshold is chosen; the rest are the test split. By rank rather than by a second hash
    cut-off, so a small run still gets a validation and a test prompt."""
    uniq = sorted(set(prompt_ids))
    u = {p: u for p, u in zip(uniq, split_hash(uniq, seed))}
    ranked = sorted(uniq, key=lambda p: (u[p], p))
    n_held = sum(u[p] < val_frac for p in uniq)
    n_held = max(n_held, min(2, len(uniq) - 1))
    n_val = min(max(1, round(threshold_frac * n_held)), n_held - 1) if n_held >= 2 else n_held
    return {p: "val" if i < n_val else "test" if i < n_held else "train" for i, p in enumerate(ranked)}


def split_masks(split: dict[str, str], prompt_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(held out, validation) per row; prompts `split` lacks (no labelled span) train."""
    s = np.array([split.get(p, "train") for p in prompt_ids])
    return s != "train", s == "val"


def probe_spans(lake: Lake, run_id: str, cfg_id: str, model: str, val_frac: float, seed: int,
                threshold_frac: float = 0.5) -> tuple[pa.Table, dict[str, str]]:
    """`model`'s labelled spans and the split of their prompts (`prompt_splits`); `ProbeDataError` when they cannot fill train, validation and test. Cheap (spans
    only): checked before any hidden state is scored or any model loaded."""
    spans = query(lake, SPANS_SQL, {"run": run_id, "cfg": cfg_id, "model": model})
    if spans.num_rows == 0:
        raise ProbeDataError(f"probe: {model} has no supported/not-supported spans in run {run_id!r}",
                             fix="label a world with ground truth (bios) or bring span verdicts (--verdicts-file)")
    split = prompt_splits(spans.column("prompt_id").to_pylist(), val_frac, threshold_frac, seed)
    held, val = split_masks(split, spans.column("prompt_id").to_pylist())
    if held.all() or not val.any() or not (held & ~val).any():
        n = len(set(spans.column("prompt_id").to_pylist()))
        raise ProbeDataError(f"probe: the spans of {model} ({n} prompts) cannot be split into train and held-out prompts "
                             f"(a validation and a test split)", fix="label more prompts")
    return spans, split


def load_probe_data(lake: Lake, run_id: str, cfg_id: str, model: str, layer: int, val_frac: float, seed: int,
                    threshold_frac: float = 0.5, hidden: bool = True) -> dict:
    """Every token of `model`'s rollouts with labelled spans — with its layer-`layer` state
    as `x` when `hidden` (scored where the lake lacks it) — the spans, and the splits."""
    spans, split = probe_spans(lake, run_id, cfg_id, model, val_frac, seed, threshold_frac)
    rollouts = pc.unique(spans.column("rollout_id"))
    if hidden:
        ensure_hidden_states(lake, run_id, model, layer, rollouts)
        toks = query(lake, TOKENS_SQL, {"run": run_id, "cfg": cfg_id, "model": model, "layer": layer})
    else:
        toks = query(lake, LABELS_SQL, {"run": run_id, "cfg": cfg_id, "model": model, "rollouts": rollouts.to_pylist()})
    n = toks.num_rows
    rids = toks.column("rollout_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, rids[1:] != rids[:-1]]) if n else np.zeros(0, np.int64)
    offset = dict(zip(rids[starts], starts))  # rollout → index of its token 0
    s_first = np.array([offset[r] for r in spans.column("rollout_id").to_pylist()], np.int64) + spans.column("start_pos").to_numpy()
    s_len = (spans.column("end_pos").to_numpy() - spans.column("start_pos").to_numpy() + 1).astype(np.int64)
    # token rows take their prompt's split from the spans', so both levels see one split
    held_tok, val_tok = split_masks(split, toks.column("prompt_id").to_pylist())
    held_span, val_span = split_masks(split, spans.column("prompt_id").to_pylist())
    x = pc.list_flatten(toks.column("hidden")).to_numpy().astype(np.float32).reshape(n, -1) if hidden else None
    return {"x": x, "y": toks.column("label").to_numpy(), "in_span": toks.column("spans").to_numpy() > 0,
            "prob": toks.column("prob").to_numpy(zero_copy_only=False),
            "entropy": toks.column("entropy").to_numpy(zero_copy_only=False).astype(np.float64),
            "rollout_id": rids, "pos": toks.column("pos").to_numpy(), "rollout_start": starts,
            "token_prompt": toks.column("prompt_id").to_pylist(), "span_first": s_first, "span_len": s_len,
            "span_y": spans.column("y").to_numpy(zero_copy_only=False).astype(np.float32),
            "held_tok": held_tok, "val_tok": val_tok, "held_span": held_span, "val_span": val_span,
            "span_prompt": spans.column("prompt_id").to_pylist(),
            "span_scores": {k: spans.column(k).to_numpy(zero_copy_only=False).astype(np.float64)
                            for k in ("min_prob", "mean_prob", "mean_entropy", "ccp", "consistency")}}


def best_f1_threshold(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores ≥ threshold`."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(y) + 1)
    f1 = 2 * tp / (k + y.sum())
    last = np.r_[scores[order][1:] != scores[order][:-1], True]  # cut only between distinct scores
    f1 = np.where(last, f1, -1)
    i = int(np.argmax(f1))
    return float(scores[order][i]), float(f1[i])


def f1_at(scores: np.ndarray, y: np.ndarray, threshold: float) -> float:
    """F1 of `scores ≥ threshold` (0 when nothing is predicted or nothing is positive)."""
    pred = scores >= threshold
    tp = float((pred & (y == 1)).sum())
    denom = float(pred.sum() + (y == 1).sum())
    return 2 * tp / denom if denom else 0.0


def threshold_on_validation(span_scores: np.ndarray, y: np.ndarray, val: np.ndarray, test: np.ndarray) -> tuple[float, float, float]:
    """(threshold, validation F1, test F1): chosen on the validation spans alone, then applied
    to the test spans."""
    threshold, val_f1 = best_f1_threshold(span_scores[val], y[val])
    return threshold, val_f1, f1_at(span_scores[test], y[test], threshold)


def _params(s: ProbeConfig) -> dict:
    """The settings a probe's identity depends on (its kind's own, not the other kind's)."""
    common = {"lambda_max": s.lambda_max, "anneal": s.anneal, "val_frac": s.val_frac, "threshold_frac": s.threshold_frac,
              "seed": s.seed, "token_weighting": s.token_weighting, "outside": s.outside,
              **({"span_weight": s.span_weight} if s.token_weighting == "span" else {})}
    if s.kind == "linear":
        return {"steps": s.steps, "lr": s.lr, "weight_decay": s.weight_decay, **common}
    return {"kind": "lora", "lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": s.lora_dropout,
            "lora_targets": list(s.lora_targets), "lora_layers": s.lora_layers, "kl_weight": s.kl_weight,
            "head_lr": s.head_lr, "lora_lr": s.lora_lr, "lora_batch": s.lora_batch, "lora_epochs": s.lora_epochs,
            "lora_steps": s.lora_steps, **common}


def train_probe(lake: Lake, run_id: str, model: str, layer: int | None = None, config: str | None = None,
                settings: ProbeConfig | None = None, **overrides) -> dict:
    """Train (or find) the probe of `model`'s rollouts in `run_id`; pick its threshold on the
    validation prompts, evaluate it on the test prompts, commit `probe_eval` rows, store the
    probe. Returns its record. `settings` (ProbeConfig: the defaults live there) with keyword
    overrides (any of its fields: kind, steps, lr, kl_weight, …) on top; `layer` and `config`
    (the spans' config id) default to the settings' layer and config_id."""
    s = resolve(ProbeConfig, settings, **{"run_id": run_id, **overrides})
    layer = s.layer if layer is None else layer
    config = config if config is not None else s.config_id
    cfg_id = hallucination_config(lake, run_id, config)
    layer = absolute_layer(model, layer)
    params = _params(s)
    d = load_probe_data(lake, run_id, cfg_id, model, layer, s.val_frac, s.seed, s.threshold_frac, hidden=s.kind == "linear")
    pid = ids.content_id("probe", run_id, cfg_id, model, str(layer), ids.canonical_json(params), str(len(d["y"])))
    rel = f"{PROBE_DIR}/{pid}"
    if lake.has_dir(rel):
        return load_probe_meta(lake, rel)
    y_np, weight_np = token_targets(d["y"], d["in_span"], s.outside, s.token_weighting, s.span_weight)
    train_tok = ~d["held_tok"]
    if s.token_weighting == "balanced":  # tokenmill's variant: positives weighted n_neg / n_pos
        labelled = (y_np != -100) & train_tok
        n_pos = float((y_np[labelled] == 1).sum())
        weight_np = np.where(y_np == 1, (float(labelled.sum()) - n_pos) / max(n_pos, 1.0), 1.0).astype(np.float32)
    if s.kind == "linear":
        trained = _train_linear(d, y_np, weight_np, s, model, layer)
    else:
        trained = _train_lora(d, y_np, weight_np, s, model, layer, _token_ids(lake, run_id, d))
    p = trained.pop("p")
    evaluation, chosen, heldout = _evaluate(d, p)
    train_rollouts = int(len(np.unique(d["rollout_id"][train_tok])))
    meta = {"artifact_id": pid, "path": rel, "model": model, "kind": s.kind, "layer": layer, **chosen,
            "run_id": run_id, "config_id": cfg_id, "train": params, "splits": _split_sizes(d),
            "auc": {f"{r['level']}:{r['method']}": r["auc"] for r in evaluation}, **trained.pop("record", {})}

    def save(tmp: str) -> None:
        torch.save(trained["weights"], os.path.join(tmp, "probe.pt"))
        with open(os.path.join(tmp, "probe.json"), "w") as f:
            json.dump(meta, f, indent=1)
        pq.write_table(heldout, os.path.join(tmp, HELDOUT_FILE))

    losses = trained["losses"]
    store_artifact(lake, run_id, rel, save, artifact_id=pid, role="probe", base_model=model,
                   train_rollouts=train_rollouts, train_tokens=int(((y_np != -100) & train_tok).sum()),
                   steps=len(losses), final_loss=float(np.mean(losses[-20:])),
                   lineage={"method": "hallucination-probe", "kind": s.kind, "run_id": run_id,
                            "hallucination_config": cfg_id, "layer": layer, "train": params},
                   rows={"probe_eval": _eval_table(pid, model, layer, evaluation)})
    return meta


def _train_linear(d: dict, y_np: np.ndarray, weight_np: np.ndarray, s: ProbeConfig, model: str, layer: int) -> dict:
    """The linear head on the stored states, full-batch: p of every token, weights, losses."""
    train_tok = ~d["held_tok"]
    x = torch.from_numpy(d["x"])
    mu, sd = x[torch.from_numpy(train_tok)].mean(0), x[torch.from_numpy(train_tok)].std(0) + 1e-6  # train statistics
    xs = (x - mu) / sd
    y, weight = torch.from_numpy(y_np), torch.from_numpy(weight_np)
    keep = torch.from_numpy((y_np != -100) & train_tok)
    tr_spans = np.flatnonzero(~d["held_span"])
    tok_i, span_i = (torch.from_numpy(a) for a in span_index(d["span_first"][tr_spans], d["span_len"][tr_spans]))
    span_y = torch.from_numpy(d["span_y"][tr_spans])
    torch.manual_seed(s.seed)
    head = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    losses = []
    for step in range(s.steps):
        lam = s.lambda_max * min(1.0, step / max(s.anneal * s.steps, 1))
        loss = probe_loss(head(xs).squeeze(-1), y, weight, keep, tok_i, span_i, span_y, lam)
        if not torch.isfinite(loss):  # diverged: the probe, its threshold and its loss would all be NaN
            raise TokenmillError(f"probe: loss is {loss.item()} at step {step} ({model}, layer {layer})",
                                 fix=f"lower the learning rate (ProbeConfig.lr, now {s.lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        p = torch.sigmoid(head(xs).squeeze(-1)).numpy()
    return {"p": p, "losses": losses,
            "weights": {"weight": head.weight.detach().squeeze(0), "bias": head.bias.detach(), "mean": mu, "std": sd}}


def _train_lora(d: dict, y_np: np.ndarray, weight_np: np.ndarray, s: ProbeConfig, model_name: str, layer: int,
                ids_of: dict) -> dict:
    """LoRA adapters and the head (`probe_lora.py`) on the training rollouts; p of every
    held-out token (training tokens NaN: never read)."""
    from tokenmill.engines.hf import load_hf
    from tokenmill.tasks.train import probe_lora

    rids, starts = d["rollout_id"], d["rollout_start"]
    ends = np.r_[starts[1:], len(rids)]
    span_rows = np.searchsorted(starts, d["span_first"], side="right") - 1  # rollout of each span
    train_seqs, held = [], []
    for k, (a, b) in enumerate(zip(starts, ends)):
        prompt, completion = ids_of[rids[a]]
        if d["held_tok"][a]:
            held.append((k, prompt, completion))
            continue
        mine = np.flatnonzero(span_rows == k)
        spans = np.stack([d["span_first"][mine] - a, d["span_first"][mine] - a + d["span_len"][mine] - 1,
                          d["span_y"][mine].astype(np.int64)], 1) if len(mine) else np.zeros((0, 3), np.int64)
        train_seqs.append(probe_lora.ProbeSequence(prompt, completion, y_np[a:b], weight_np[a:b], spans))
    net, tok, _ = load_hf(model_name, device=None if torch.cuda.is_available() else "cpu", dtype="float32")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = probe_lora.train_lora_probe(
        net, pad, train_seqs, layer, lora_layers=s.lora_layers, targets=s.lora_targets, r=s.lora_r, alpha=s.lora_alpha,
        dropout=s.lora_dropout, kl_weight=s.kl_weight, head_lr=s.head_lr, lora_lr=s.lora_lr, batch=s.lora_batch,
        epochs=s.lora_epochs, steps=s.lora_steps, lambda_max=s.lambda_max, anneal=s.anneal, seed=s.seed,
        stage=f"lora probe {model_name}")
    p = np.full(len(rids), np.nan)
    scores = probe_lora.lora_probe_scores(net, out["head"], pad, [(pr, c) for _, pr, c in held], layer)
    for (k, _, _), sc in zip(held, scores):
        p[starts[k]: ends[k]] = sc
    head = out["head"]
    return {"p": p, "losses": out["losses"],
            "record": {"lora_layers": out["lora_layers"], "final_kl": float(np.mean(out["kl"][-20:]))},
            "weights": {"weight": head.weight.detach().squeeze(0).cpu(), "bias": head.bias.detach().cpu(),
                        "lora": probe_lora.lora_state(net), "lora_scale": s.lora_alpha / s.lora_r}}


def _token_ids(lake: Lake, run_id: str, d: dict) -> dict:
    """{rollout: (prompt ids, completion ids)} of the probed rollouts, each completion checked
    to be the labelled tokens (positions 0 … n−1), so p_t lands on its own label."""
    rids, starts = d["rollout_id"], d["rollout_start"]
    rows = lake.read("rollouts", run_id, columns=["rollout_id", "prompt_token_ids", "completion_token_ids"],
                     filter=pc.field("rollout_id").isin(pa.array(rids[starts]))).to_pylist()
    out = {r["rollout_id"]: (r["prompt_token_ids"], r["completion_token_ids"]) for r in rows}
    for a, b in zip(starts, np.r_[starts[1:], len(rids)]):
        got = out.get(rids[a])
        if got is None or len(got[1]) != b - a or not np.array_equal(d["pos"][a:b], np.arange(b - a)):
            raise TokenmillError(f"probe: the labelled tokens of rollout {rids[a]} are not its completion's tokens",
                                 fix="label the run again (`tokenmill label --labelers hallucination`)")
    return out


def _split_sizes(d: dict) -> dict:
    """Prompts and labelled spans of each split."""
    held, val = d["held_span"], d["val_span"]
    out = {}
    for name, mask in (("train", ~held), ("val", val), ("test", held & ~val)):
        out[name] = {"prompts": len({p for p, m in zip(d["span_prompt"], mask) if m}), "spans": int(mask.sum()),
                     "positives": int(d["span_y"][mask].sum())}
    return out


def _evaluate(d: dict, p: np.ndarray) -> tuple[list[dict], dict, pa.Table]:
    """AUC rows per (level, method) on the test prompts; the probe's threshold, chosen on the
    validation prompts, with its F1 there and on test; the test scores themselves (level,
    method, score, label: what ROC curves are drawn from)."""
    rows, held = [], []
    hs = np.flatnonzero(d["held_span"])
    tok_i, span_i = span_index(d["span_first"][hs], d["span_len"][hs])
    probe_span = np.full(len(hs), -np.inf)
    np.maximum.at(probe_span, span_i, p[tok_i])
    ys = d["span_y"][hs]
    val = d["val_span"][hs]
    test = ~val
    threshold, val_f1, test_f1 = threshold_on_validation(probe_span, ys, val, test)
    scores = {"probe": probe_span, **{name: sign * d["span_scores"][col][hs] for name, (col, sign) in SPAN_BASELINES.items()}}
    for name, sc in scores.items():
        sc, yt = sc[test], ys[test]
        rows.append({"level": "span", "method": name, "auc": auc_or_none(sc, yt), "positives": int(yt.sum()),
                     "negatives": int(len(yt) - yt.sum())})
        held.append(("span", name, sc, yt))
    vt = d["held_tok"] & ~d["val_tok"] & (d["y"] != -100)
    yt = d["y"][vt]
    for name, sc in (("probe", p[vt]), ("1 - prob", 1 - d["prob"][vt]), ("entropy", d["entropy"][vt])):
        rows.append({"level": "token", "method": name, "auc": auc_or_none(sc, yt), "positives": int(yt.sum()),
                     "negatives": int(len(yt) - yt.sum())})
        held.append(("token", name, sc, yt))
    heldout = pa.table({
        "level": np.concatenate([np.full(len(sc), lv, dtype=object) for lv, _, sc, _ in held]),
        "method": np.concatenate([np.full(len(sc), m, dtype=object) for _, m, sc, _ in held]),
        "score": np.concatenate([np.asarray(sc, np.float64) for _, _, sc, _ in held]).astype(np.float32),
        "label": np.concatenate([np.asarray(y).astype(np.int8) for _, _, _, y in held]),
    })
    return rows, {"threshold": threshold, "val_span_f1": val_f1, "test_span_f1": test_f1}, heldout


def _eval_table(pid: str, model: str, layer: int, rows: list[dict]) -> pa.Table:
    n = len(rows)
    return pa.table({
        "probe_id": [pid] * n, "model": [model] * n, "layer": pa.array([layer] * n, pa.int32()),
        "level": [r["level"] for r in rows], "method": [r["method"] for r in rows],
        "auc": pa.array([r["auc"] for r in rows], pa.float32(), from_pandas=True),  # NaN → null: no class, no AUC
        "positives": pa.array([r["positives"] for r in rows], pa.int32()),
        "negatives": pa.array([r["negatives"] for r in rows], pa.int32()),
    }, schema=PROBE_EVAL.schema)


def load_probe_meta(lake: Lake, rel: str) -> dict:
    with open(os.path.join(artifact_path(lake, rel), "probe.json")) as f:
        return json.load(f)


def load_probe(lake: Lake, rel: str) -> tuple[dict, dict]:
    """(weights: weight, bias and — linear — mean, std or — LoRA — lora {module: a, b},
    lora_scale; record with kind, layer and threshold)."""
    return torch.load(os.path.join(artifact_path(lake, rel), "probe.pt"), weights_only=True), load_probe_meta(lake, rel)


def load_heldout(lake: Lake, rel: str) -> pa.Table | None:
    """The probe's test-split (level, method, score, label) rows; None for probes stored
    before they were kept."""
    path = os.path.join(artifact_path(lake, rel), HELDOUT_FILE)
    return pq.read_table(path) if os.path.exists(path) else None
