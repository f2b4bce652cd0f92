"""The LoRA hallucination probe (Obeso et al. 2025, "Real-Time Detection of Hallucinated
Entities in Long-Form Generation"; obalcells/hallucination_probes): the linear value head of
`probe.py` on layer ℓ, trained jointly with LoRA adapters on every decoder layer up to ℓ,
while a KL term keeps the adapted model's next-token distribution at the base model's.

  p_t   = σ(w · h'_t + b)         h'_t: layer-ℓ state of the LoRA-adapted model at token t
  W'    = W + (α / r) · B A        on q, k, v, o, gate, up, down of decoder layers 0 … ℓ−1
                                   (hidden_states[ℓ] is the output of decoder layer ℓ−1)
  L     = λ_KL · L_KL + (1 − λ_KL) · L_probe
  L_KL  = mean over completion positions t of  Σ_v p_base(v | x_≤t) · (log p_base(v | x_≤t)
                                                 − log p_LoRA(v | x_≤t))     = KL(p_base ‖ p_LoRA)
  L_probe = (1 − λ_s) · L_token + λ_s · L_span, per batch, exactly as the linear probe's
          (`probe.py`: span tokens ×10, outside tokens negative, λ_s annealed to 1 over the run)

Upstream's recipe, the defaults here (`ProbeConfig`), read from obalcells/hallucination_probes
at commit 295450e (the fork richieM/hallucination_probes holds these files unchanged):

- LoRA r = 16, α = 32, dropout 0.05, no bias, on `self_attn.{q,k,v,o}_proj` and
  `mlp.{gate,up,down}_proj` of the layers `range(0, layer + 1)` ("all", up to the hooked
  layer) — `utils/model_utils.py::setup_lora_for_layers`, `probe/config.py`
  (`lora_layers="all"`), `configs/train_config.yaml`.
- λ_KL = 0.5, λ_LM = 0 (`configs/train_config.yaml`); the KL is `F.kl_div(log_softmax(q),
  softmax(base))` summed over the vocabulary and averaged over the positions whose LM label
  is not −100, i.e. every completion token's next-token distribution, the base logits from
  the same model with the adapters disabled and detached — `probe/loss.py::
  compute_kl_divergence_loss`; the combination `probe/trainer.py::compute_loss`.
  (The probes released on the Hub and recommended in the README are named `lambda_kl_0_05`:
  `kl_weight=0.05` gives that one.)
- learning rates: value head 1e-3, LoRA 1e-4 (`configs/train_config.yaml`; `probe/config.py`'s
  dataclass defaults 5e-3 / 5e-5 are overridden there), one AdamW with the two parameter
  groups (`probe/trainer.py::create_optimizer`), built as `torch.optim.AdamW(groups, eps=…)`
  — so torch's default weight decay 0.01, not the Trainer's 0, which it never passes —
  β = (0.9, 0.999), ε = 1e-8, linear decay to 0 without warm-up, gradients clipped to norm 1
  (the Trainer's defaults with `max_grad_norm: 1.0`); batch 4, one epoch
  (`per_device_train_batch_size`, `num_train_epochs`).
- value head initialised N(0, 0.01²), bias 0 (`probe/value_head_probe.py`), reading the raw
  layer state (no standardisation, unlike tokenmill's linear probe); logits clamped to ±100.

Where tokenmill differs: upstream keeps the model and the head in bfloat16 (adapters
float32) where tokenmill trains float32 weights under autocast; it truncates sequences at
1536 tokens and gives pad tokens no probe target; its head is seeded 42 (tokenmill: `seed`);
a NaN loss counts 0 there and stops training here; the probe reads `output_hidden_states[ℓ]` where upstream hooks the
output of decoder layer ℓ−1 — the same tensor except at the last layer, whose entry in
`hidden_states` has the final norm applied; sequences are drawn in a seeded order of
tokenmill's own (upstream: the Trainer's sampler over a shuffled dataset); the LM-loss
regulariser (λ_LM) is not offered. The LoRA layer is `finetune.py`'s (peft's, written out;
peft is not a tokenmill dependency); the adapters stay separate from the weights, as
upstream saves them, since merging them would change the model the probe watches.

Memory is bounded by the batch: one forward with adapters, one without (no gradient), and
the vocabulary-wide distributions only at the batch's completion positions. On CPU in
float32; on CUDA under bfloat16 autocast, as upstream loads the model in bfloat16.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tokenmill import progress as progress_hook
from tokenmill.errors import TokenmillError
from tokenmill.models.builder import pad_batch
from tokenmill.tasks.train.finetune import LoRALinear, add_lora
from tokenmill.tasks.train.probe_loss import MAX_LOGIT, probe_loss, span_index

MAX_GRAD_NORM = 1.0  # upstream train_config.yaml max_grad_norm
ADAMW_WEIGHT_DECAY = 0.01  # upstream's optimizer is torch's AdamW with its default decay (trainer.py create_optimizer)


@dataclass
class ProbeSequence:
    """One training rollout: prompt + completion ids, per-completion-token targets and
    weights (−100: no target), and its labelled spans (first, last completion position, y)."""

    prompt: Sequence[int]
    completion: Sequence[int]
    y: np.ndarray
    weight: np.ndarray
    spans: np.ndarray  # [S, 3] int: start_pos, end_pos, label (1 = not supported)


def kl_to_base(logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """mean over rows of KL(p_base ‖ p) = Σ_v p_base (log p_base − log p): upstream's
    `F.kl_div(log_softmax(lora), softmax(base), reduction="none").sum(-1).mean()`, in float32."""
    if not len(logits):
        return logits.new_zeros(())
    log_q = torch.log_softmax(logits.float(), -1)
    p_ref = torch.softmax(base_logits.float(), -1)
    return F.kl_div(log_q, p_ref, reduction="none", log_target=False).sum(-1).mean()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TokenmillError(f"probe: LoRA probe needs a decoder with `model.layers` (a Llama-like model), "
                             f"not {type(model).__name__}", fix="train a linear probe (--kind linear)")
    return layers


def add_probe_lora(model: nn.Module, layer: int, lora_layers: Sequence[int] | None, targets: Sequence[str],
                   r: int, alpha: float, dropout: float) -> tuple[list[nn.Parameter], list[int]]:
    """Freeze `model` and wrap `targets` of the decoder layers in LoRA: `lora_layers`, or
    (None, upstream's "all") every decoder layer below hidden_states[`layer`]. Returns the
    adapters' parameters and the layers they are on."""
    layers = decoder_layers(model)
    chosen = list(range(layer)) if lora_layers is None else sorted(set(lora_layers))
    if not chosen:
        raise TokenmillError(f"probe: a LoRA probe on hidden state {layer} has no decoder layer below it to adapt",
                             fix="pick a layer ≥ 1, or train a linear probe (--kind linear)")
    if chosen[0] < 0 or chosen[-1] >= len(layers):
        raise TokenmillError(f"probe: LoRA layers {chosen} outside the model's 0…{len(layers) - 1}",
                             fix="name decoder layers the model has")
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for i in chosen:
        try:
            params += add_lora(layers[i], targets, r, alpha, dropout)
        except ValueError as e:
            raise TokenmillError(f"probe: {e}", fix="set ProbeConfig.lora_targets to Linear modules of the model") from None
    return params, chosen


@contextmanager
def adapters_off(model: nn.Module):
    """The base model: every LoRA update scaled by 0 (peft's `disable_adapter`)."""
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    scales = [m.scale for m in wrapped]
    for m in wrapped:
        m.scale = 0.0
    try:
        yield
    finally:
        for m, s in zip(wrapped, scales):
            m.scale = s


def _batch(seqs: list[ProbeSequence], pad_id: int, dev: torch.device) -> dict:
    """Padded ids plus the flat completion-token index (row, column) and the batch's targets
    and spans, spans indexing into the flat completion tokens."""
    ids, attn, labels = pad_batch([(list(s.prompt) + list(s.completion), len(s.prompt)) for s in seqs], pad_id)
    rows, cols, offsets, n = [], [], [], 0
    for row, s in enumerate(seqs):
        rows.append(np.full(len(s.completion), row))
        cols.append(len(s.prompt) + np.arange(len(s.completion)))
        offsets.append(n)
        n += len(s.completion)
    y = np.concatenate([s.y for s in seqs]).astype(np.float32)
    w = np.concatenate([s.weight for s in seqs]).astype(np.float32)
    spans = [(off + s.spans[:, 0], s.spans[:, 1] - s.spans[:, 0] + 1, s.spans[:, 2]) for off, s in zip(offsets, seqs)]
    first = np.concatenate([a for a, _, _ in spans]).astype(np.int64)
    length = np.concatenate([b for _, b, _ in spans]).astype(np.int64)
    tok_i, span_i = span_index(first, length)
    t = lambda a, dt=torch.long: torch.as_tensor(a, dtype=dt, device=dev)  # noqa: E731
    return {"ids": ids.to(dev), "attn": attn.to(dev), "lm_active": (labels != -100).to(dev),
            "rows": t(np.concatenate(rows)), "cols": t(np.concatenate(cols)), "y": t(y, torch.float32),
            "w": t(w, torch.float32), "tok_i": t(tok_i), "span_i": t(span_i),
            "span_y": t(np.concatenate([c for _, _, c in spans]), torch.float32)}


def _forward(model: nn.Module, b: dict, layer: int, with_hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(LM logits at the completion positions, layer-`layer` states of the completion tokens)."""
    out = model.model(input_ids=b["ids"], attention_mask=b["attn"], output_hidden_states=with_hidden)
    logits = model.lm_head(out.last_hidden_state[b["lm_active"]])
    hidden = out.hidden_states[layer][b["rows"], b["cols"]] if with_hidden else None
    return logits, hidden


def planned_lora_steps(n: int, batch: int, epochs: int, steps: int | None) -> int:
    return steps or epochs * math.ceil(n / batch)


def train_lora_probe(model: nn.Module, pad_id: int, seqs: list[ProbeSequence], layer: int, *, lora_layers,
                     targets: Sequence[str], r: int, alpha: float, dropout: float, kl_weight: float,
                     head_lr: float, lora_lr: float, batch: int, epochs: int, steps: int | None,
                     lambda_max: float, anneal: float, seed: int, stage: str = "lora probe",
                     on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train LoRA adapters on `model` (in place) and a value head on hidden_states[`layer`].
    Returns {head, lora_layers, losses (total), kl (per step), steps}."""
    if not seqs:
        raise TokenmillError("probe: no training rollouts for the LoRA probe", fix="label more prompts")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    dev = next(model.parameters()).device
    lora_params, chosen = add_probe_lora(model, layer, lora_layers, targets, r, alpha, dropout)
    head = nn.Linear(model.config.hidden_size, 1, device=dev, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01)
        head.bias.zero_()
    from transformers import get_linear_schedule_with_warmup

    total = planned_lora_steps(len(seqs), batch, epochs, steps)
    opt = torch.optim.AdamW([{"params": list(head.parameters()), "lr": head_lr}, {"params": lora_params, "lr": lora_lr}],
                            weight_decay=ADAMW_WEIGHT_DECAY, eps=1e-8)
    sched = get_linear_schedule_with_warmup(opt, 0, total)
    trainable = list(head.parameters()) + lora_params
    losses, kls = [], []
    progress_hook.start(stage, total)
    model.train()
    step = 0
    while step < total:
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            if step == total:
                break
            b = _batch([seqs[j] for j in order[i: i + batch]], pad_id, dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits, hidden = _forward(model, b, layer, True)
                with torch.no_grad(), adapters_off(model):
                    base_logits, _ = _forward(model, b, layer, False)
                z = head(hidden.to(head.weight.dtype)).squeeze(-1).float()
            kl = kl_to_base(logits, base_logits) if kl_weight > 0 else logits.new_zeros(())
            lam = lambda_max * min(1.0, step / max(anneal * total, 1))
            l_probe = probe_loss(z, b["y"], b["w"], b["y"] != -100, b["tok_i"], b["span_i"], b["span_y"], lam)
            loss = kl_weight * kl + (1 - kl_weight) * l_probe
            if not torch.isfinite(loss):
                raise TokenmillError(f"probe: LoRA probe loss is {loss.item()} at step {step}",
                                     fix=f"lower the learning rates (ProbeConfig.head_lr {head_lr:g}, lora_lr {lora_lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            opt.step()
            sched.step()
            losses.append(loss.item())
            kls.append(float(kl.item()))
            step += 1
            progress_hook.advance(stage, note=f"loss {losses[-1]:.3f} kl {kls[-1]:.4f}")
            if on_step:
                on_step(step, losses[-1])
    model.eval()
    return {"head": head, "lora_layers": chosen, "losses": losses, "kl": kls, "steps": total}


@torch.no_grad()
def lora_probe_scores(model: nn.Module, head: nn.Linear, pad_id: int, seqs: list[tuple[Sequence[int], Sequence[int]]],
                      layer: int, batch: int = 8) -> list[np.ndarray]:
    """p_t of every completion token of each (prompt, completion), in batches of `batch`."""
    dev = next(model.parameters()).device
    out = []
    model.eval()
    for i in range(0, len(seqs), batch):
        part = seqs[i: i + batch]
        ids, attn, _ = pad_batch([(list(p) + list(c), len(p)) for p, c in part], pad_id)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            hs = model.model(input_ids=ids.to(dev), attention_mask=attn.to(dev), output_hidden_states=True).hidden_states[layer]
            for row, (p, c) in enumerate(part):
                z = head(hs[row, len(p): len(p) + len(c)].to(head.weight.dtype)).squeeze(-1).float()
                out.append(torch.sigmoid(z.clamp(-MAX_LOGIT, MAX_LOGIT)).cpu().numpy())
    return out


def lora_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {a, b}} of every adapter (what a saved LoRA probe keeps)."""
    return {name: {"a": m.lora_a.detach().cpu(), "b": m.lora_b.detach().cpu()}
            for name, m in model.named_modules() if isinstance(m, LoRALinear)}
