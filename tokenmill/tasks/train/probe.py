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
token; the annealing lets the token loss shape the direction first). Validation holds
whole prompts out. Reported on them: ROC AUC at span level (probe: max p_t over the span)
next to each uncertainty score (1 − min prob, 1 − mean prob, mean entropy, 1 − CCP,
1 − consistency), and at token level next to 1 − p(token) and entropy. The threshold
maximises span-level F1 on validation. Saved with its layer and threshold. An AUC that
is undefined (the held-out rows hold one class, or a method has no scores: entropy of
vLLM rollouts) is null in `probe_eval` and in the probe's record, never NaN.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from tokenmill import ids
from tokenmill.common_config import resolve
from tokenmill.tasks.train.probe_config import ProbeConfig
from tokenmill.errors import TokenmillError
from tokenmill.schema import PROBE_EVAL
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.storage.catalog import only_config
from tokenmill.storage.artifacts import artifact_path, store_artifact
from tokenmill.tasks.train.metrics import auc_or_none, split_by_prompt

PROBE_DIR = f"{ARTIFACTS_DIR}/probes"
HELDOUT_FILE = "heldout.parquet"  # held-out scores per level and method, for ROC curves
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
SPANS_SQL = """
SELECT s.rollout_id, r.prompt_id, s.start_pos, s.end_pos, s.label = 'not_supported' AS y,
       s.min_prob, s.mean_prob, s.mean_entropy, s.ccp, s.consistency
FROM hallucination_spans s JOIN rollouts r ON r.run_id = s.run_id AND r.rollout_id = s.rollout_id
WHERE s.run_id = $run AND s.config_id = $cfg AND r.model = $model
      AND s.label IN ('supported', 'not_supported') AND s.start_pos <= s.end_pos
ORDER BY s.rollout_id, s.span_id
"""


class ProbeDataError(TokenmillError):
    """A model's labelled spans cannot support a probe (none, or all from too few prompts to
    hold some out). The flow skips such a model when it picked the models itself."""


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


def probe_spans(lake: Lake, run_id: str, cfg_id: str, model: str, val_frac: float, seed: int) -> tuple[pa.Table, np.ndarray]:
    """`model`'s labelled spans and which are held out; `ProbeDataError` when they cannot
    support a probe. Cheap (spans only): checked before any hidden state is scored."""
    spans = query(lake, SPANS_SQL, {"run": run_id, "cfg": cfg_id, "model": model})
    if spans.num_rows == 0:
        raise ProbeDataError(f"probe: {model} has no supported/not-supported spans in run {run_id!r}",
                             fix="label a world with ground truth (bios) or bring span verdicts (--verdicts-file)")
    val_span = split_by_prompt(spans.column("prompt_id").to_pylist(), val_frac, seed)
    if not val_span.any() or val_span.all():
        n = len(set(spans.column("prompt_id").to_pylist()))
        raise ProbeDataError(f"probe: the spans of {model} ({n} prompts) cannot be split into train and held-out prompts",
                             fix="label more prompts")
    return spans, val_span


def load_probe_data(lake: Lake, run_id: str, cfg_id: str, model: str, layer: int, val_frac: float, seed: int) -> dict:
    spans, val_span = probe_spans(lake, run_id, cfg_id, model, val_frac, seed)
    ensure_hidden_states(lake, run_id, model, layer, pc.unique(spans.column("rollout_id")))
    toks = query(lake, TOKENS_SQL, {"run": run_id, "cfg": cfg_id, "model": model, "layer": layer})
    n = toks.num_rows
    x = pc.list_flatten(toks.column("hidden")).to_numpy().astype(np.float32).reshape(n, -1)
    rids = toks.column("rollout_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, rids[1:] != rids[:-1]]) if n else np.zeros(0, np.int64)
    offset = dict(zip(rids[starts], starts))  # rollout → index of its token 0
    s_first = np.array([offset[r] for r in spans.column("rollout_id").to_pylist()], np.int64) + spans.column("start_pos").to_numpy()
    s_len = (spans.column("end_pos").to_numpy() - spans.column("start_pos").to_numpy() + 1).astype(np.int64)
    return {"x": x, "y": toks.column("label").to_numpy(), "in_span": toks.column("spans").to_numpy() > 0, "prob": toks.column("prob").to_numpy(zero_copy_only=False),
            "entropy": toks.column("entropy").to_numpy(zero_copy_only=False).astype(np.float64),
            "token_prompt": toks.column("prompt_id").to_pylist(), "span_first": s_first, "span_len": s_len,
            "span_y": spans.column("y").to_numpy(zero_copy_only=False).astype(np.float32),
            "val_span": val_span,
            "span_scores": {k: spans.column(k).to_numpy(zero_copy_only=False).astype(np.float64)
                            for k in ("min_prob", "mean_prob", "mean_entropy", "ccp", "consistency")}}


def token_targets(label: np.ndarray, in_span: np.ndarray, outside: str, weighting: str,
                  span_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(targets, weights) of every token: 1 / 0 inside not-supported / supported spans, −100
    inside unverifiable ones; outside every span 0 (`outside="negative"`) or −100 (`ignore`).
    Weights: `span_weight` on span tokens with a target, 1 elsewhere (`weighting="span"`), all
    1 otherwise (the balanced positive weight is set by the trainer)."""
    y = label.astype(np.float32).copy()
    if outside == "negative":
        y[~in_span] = 0.0
    w = np.where(in_span & (y != -100), span_weight, 1.0) if weighting == "span" else np.ones(len(y))
    return y, w.astype(np.float32)


def _span_index(first: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token index, span index) of every token of every span."""
    span = np.repeat(np.arange(len(first)), length)
    tok = np.repeat(first, length) + np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return tok, span


def span_max(logits: torch.Tensor, tok: torch.Tensor, span: torch.Tensor, n_spans: int) -> torch.Tensor:
    """max_{t ∈ S} logits_t for each span S (segments given as token/span index pairs)."""
    out = torch.full((n_spans,), -torch.inf, dtype=logits.dtype)
    return out.scatter_reduce(0, span, logits[tok], reduce="amax", include_self=True)


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


def train_probe(lake: Lake, run_id: str, model: str, layer: int | None = None, config: str | None = None,
                settings: ProbeConfig | None = None, **overrides) -> dict:
    """Train (or find) the probe of `model`'s rollouts in `run_id`; evaluate it on held-out
    prompts, commit `probe_eval` rows, store the probe. Returns its record. `settings`
    (ProbeConfig: the defaults live there) with keyword overrides (steps, lr, weight_decay,
    lambda_max, anneal, val_frac, seed) on top; `layer` and `config` (the spans' config id)
    default to the settings' layer and config_id."""
    s = resolve(ProbeConfig, settings, **{"run_id": run_id, **overrides})
    layer = s.layer if layer is None else layer
    config = config if config is not None else s.config_id
    steps, lr, weight_decay, lambda_max, anneal, val_frac, seed = (
        s.steps, s.lr, s.weight_decay, s.lambda_max, s.anneal, s.val_frac, s.seed)
    cfg_id = hallucination_config(lake, run_id, config)
    layer = absolute_layer(model, layer)
    params = {"steps": steps, "lr": lr, "weight_decay": weight_decay, "lambda_max": lambda_max, "anneal": anneal,
              "val_frac": val_frac, "seed": seed, "token_weighting": s.token_weighting, "outside": s.outside,
              **({"span_weight": s.span_weight} if s.token_weighting == "span" else {})}
    d = load_probe_data(lake, run_id, cfg_id, model, layer, val_frac, seed)
    pid = ids.content_id("probe", run_id, cfg_id, model, str(layer), ids.canonical_json(params), str(len(d["y"])))
    rel = f"{PROBE_DIR}/{pid}"
    if lake.has_dir(rel):
        return load_probe_meta(lake, rel)
    val_tok = split_by_prompt(d["token_prompt"], val_frac, seed)
    val_span = d["val_span"]
    x = torch.from_numpy(d["x"])
    mu, sd = x[torch.from_numpy(~val_tok)].mean(0), x[torch.from_numpy(~val_tok)].std(0) + 1e-6  # train statistics
    xs = (x - mu) / sd
    y_np, weight_np = token_targets(d["y"], d["in_span"], s.outside, s.token_weighting, s.span_weight)
    y = torch.from_numpy(y_np)
    tok_train = torch.from_numpy((y_np != -100) & ~val_tok)
    tr_spans = np.flatnonzero(~val_span)
    tok_i, span_i = _span_index(d["span_first"][tr_spans], d["span_len"][tr_spans])
    tok_i, span_i = torch.from_numpy(tok_i), torch.from_numpy(span_i)
    span_y = torch.from_numpy(d["span_y"][tr_spans])
    n_pos = float(y[tok_train].sum())
    if s.token_weighting == "balanced":  # tokenmill's variant: positives weighted n_neg / n_pos
        weight_np = np.where(y_np == 1, (float(tok_train.sum()) - n_pos) / max(n_pos, 1.0), 1.0).astype(np.float32)
    weight = torch.from_numpy(weight_np)[tok_train]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for step in range(steps):
        lam = lambda_max * min(1.0, step / max(anneal * steps, 1))
        logits = head(xs).squeeze(-1)
        l_tok = F.binary_cross_entropy_with_logits(logits[tok_train], y[tok_train], weight=weight)
        l_span = F.binary_cross_entropy_with_logits(span_max(logits, tok_i, span_i, len(tr_spans)), span_y)
        loss = (1 - lam) * l_tok + lam * l_span
        if not torch.isfinite(loss):  # diverged: the probe, its threshold and its loss would all be NaN
            raise TokenmillError(f"probe: loss is {loss.item()} at step {step} ({model}, layer {layer})",
                                 fix=f"lower the learning rate (ProbeConfig.lr, now {lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        p = torch.sigmoid(head(xs).squeeze(-1)).numpy()
    evaluation, threshold, f1, heldout = _evaluate(d, p, val_tok, val_span)
    meta = {"artifact_id": pid, "path": rel, "model": model, "layer": layer, "threshold": threshold, "val_span_f1": f1,
            "run_id": run_id, "config_id": cfg_id, "train": params, "auc": {f"{r['level']}:{r['method']}": r["auc"] for r in evaluation}}

    def save(tmp: str) -> None:
        torch.save({"weight": head.weight.detach().squeeze(0), "bias": head.bias.detach(), "mean": mu, "std": sd},
                   os.path.join(tmp, "probe.pt"))
        with open(os.path.join(tmp, "probe.json"), "w") as f:
            json.dump(meta, f, indent=1)
        pq.write_table(heldout, os.path.join(tmp, HELDOUT_FILE))

    store_artifact(lake, run_id, rel, save, artifact_id=pid, role="probe", base_model=model,
                   train_rollouts=len({r for r, v in zip(d["token_prompt"], val_tok) if not v}),
                   train_tokens=int(tok_train.sum()), steps=steps, final_loss=float(np.mean(losses[-20:])),
                   lineage={"method": "hallucination-probe", "run_id": run_id, "hallucination_config": cfg_id,
                            "layer": layer, "train": params},
                   rows={"probe_eval": _eval_table(pid, model, layer, evaluation)})
    return meta


def _evaluate(d: dict, p: np.ndarray, val_tok: np.ndarray, val_span: np.ndarray) -> tuple[list[dict], float, float, pa.Table]:
    """AUC rows per (level, method) on the held-out prompts, the probe's threshold and F1, and
    the held-out scores themselves (level, method, score, label: what ROC curves are drawn from)."""
    rows, held = [], []
    vs = np.flatnonzero(val_span)
    tok_i, span_i = _span_index(d["span_first"][vs], d["span_len"][vs])
    probe_span = np.full(len(vs), -np.inf)
    np.maximum.at(probe_span, span_i, p[tok_i])
    ys = d["span_y"][vs]
    scores = {"probe": probe_span, **{name: sign * d["span_scores"][col][vs] for name, (col, sign) in SPAN_BASELINES.items()}}
    for name, s in scores.items():
        rows.append({"level": "span", "method": name, "auc": auc_or_none(s, ys), "positives": int(ys.sum()),
                     "negatives": int(len(ys) - ys.sum())})
        held.append(("span", name, s, ys))
    vt = val_tok & (d["y"] != -100)
    yt = d["y"][vt]
    for name, s in (("probe", p[vt]), ("1 - prob", 1 - d["prob"][vt]), ("entropy", d["entropy"][vt])):
        rows.append({"level": "token", "method": name, "auc": auc_or_none(s, yt), "positives": int(yt.sum()),
                     "negatives": int(len(yt) - yt.sum())})
        held.append(("token", name, s, yt))
    threshold, f1 = best_f1_threshold(probe_span, ys)
    heldout = pa.table({
        "level": np.concatenate([np.full(len(s), lv, dtype=object) for lv, _, s, _ in held]),
        "method": np.concatenate([np.full(len(s), m, dtype=object) for _, m, s, _ in held]),
        "score": np.concatenate([np.asarray(s, np.float64) for _, _, s, _ in held]).astype(np.float32),
        "label": np.concatenate([np.asarray(y).astype(np.int8) for _, _, _, y in held]),
    })
    return rows, threshold, f1, heldout


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
    """(weights: weight, bias, mean, std; record with layer and threshold)."""
    return torch.load(os.path.join(artifact_path(lake, rel), "probe.pt"), weights_only=True), load_probe_meta(lake, rel)


def load_heldout(lake: Lake, rel: str) -> pa.Table | None:
    """The probe's held-out (level, method, score, label) rows; None for probes stored before
    they were kept."""
    path = os.path.join(artifact_path(lake, rel), HELDOUT_FILE)
    return pq.read_table(path) if os.path.exists(path) else None
