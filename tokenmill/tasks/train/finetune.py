"""Fine-tuning a causal LM on (prompt, completion) token sequences, completion-only loss:
cDPO's positive and negative contrast models (`labelers/critical/labeler.py`).

A `ContrastTrainConfig` (config.py) is the recipe. `method="lora"` adds LoRA adapters to
the Linear modules named in `lora_targets` (every other weight frozen) and merges them into
the weights after training, so the result is a plain model any engine loads;
`method="full"` trains every weight. The LoRA layer is peft's (y = W x + (α/r)·B A
dropout(x), A Kaiming-uniform with a = √5, B zero, so training starts from the policy
itself), written out here in a few lines: peft is not a tokenmill dependency, and a merged
model needs nothing of it.

Each epoch draws the sequences in a seeded random order and cuts it into batches of
`batch` (the last one smaller, as Hugging Face's Trainer does); `steps`, when set, runs
that many steps and starts new epochs as needed. The loss is the mean next-token
cross-entropy over completion tokens (EOS included); AdamW (weight decay 0), gradients
clipped to norm 1, the learning rate from transformers' warm-up + cosine / constant
schedules, stepped after each optimizer step as the Trainer does (so with warm-up the first
step has learning rate 0). On CUDA the forward pass runs under bfloat16 autocast (the
authors' `bf16=True`); on CPU everything is float32.

Held out (the authors' `load_data(num_val=300)` and Trainer `load_best_model_at_end`): the
last `val_examples` sequences, at most a tenth of them (tokenmill's cap: a run of a few
hundred rollouts would otherwise train on nothing), are not trained on. Every `eval_steps`
steps their loss (the mean of per-batch mean losses, as the Trainer's eval_loss) is
computed, and the weights of the evaluated step with the lowest loss are the result. A run
shorter than `eval_steps` is never evaluated and keeps its last step, as the Trainer does.

Progress: each step advances `tokenmill.progress` stage `stage` with the step's loss as its
note, so the CLI shows a bar (`train pos tiny-small  12/40  loss 1.234`) and a Prefect run
a progress artifact.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import torch
from torch import nn

from tokenmill.tasks.train.finetune_config import ContrastTrainConfig
from tokenmill.engines.hf import load_hf
from tokenmill.models.builder import pad_batch
from tokenmill import progress as progress_hook


# ------------------------------------------------------------------ LoRA


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update: W x + (alpha / r) · B A dropout(x)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + nn.functional.linear(nn.functional.linear(self.dropout(x), self.lora_a), self.lora_b) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base Linear with the update folded into its weight."""
        self.base.weight += (self.lora_b @ self.lora_a).to(self.base.weight.dtype) * self.scale
        return self.base


def add_lora(model: nn.Module, targets: Sequence[str], r: int, alpha: float, dropout: float) -> list[nn.Parameter]:
    """Freeze `model`, wrap every Linear whose name ends in one of `targets` in a `LoRALinear`;
    returns the adapters' parameters (the only trainable ones)."""
    for p in model.parameters():
        p.requires_grad_(False)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in set(targets)]
    if not found:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRA: no Linear module named {', '.join(targets)} in the model; it has {', '.join(names)}")
    params = []
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        wrapped = LoRALinear(module, r, alpha, dropout)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped)
        params += [wrapped.lora_a, wrapped.lora_b]
    return params


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` by its merged Linear (in place); returns `model`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.merged())
    return model


# ------------------------------------------------------------------ training


def planned_steps(n_examples: int, recipe: ContrastTrainConfig) -> int:
    """Optimizer steps of a run: `steps`, else `epochs` × ⌈examples / batch⌉."""
    return recipe.steps or recipe.epochs * math.ceil(n_examples / recipe.batch)


def _batches(n: int, batch: int, steps: int, rng: random.Random):
    """Index batches: a fresh seeded order per epoch, cut into `batch`-sized pieces."""
    done = 0
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, batch):
            if done == steps:
                return
            yield order[i : i + batch]
            done += 1


def held_out(n: int, val_examples: int) -> int:
    """How many of `n` sequences the held-out split takes: `val_examples`, at most n // 10."""
    return min(val_examples, n // 10)


def finetune(base: str, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
             recipe: ContrastTrainConfig | None = None, seed: int = 0, stage: str = "finetune",
             progress: Callable[[int, int, float], None] | None = None, history: dict | None = None):
    """(model, tokenizer, losses) after training `base` on the sequences with `recipe` (default:
    the cDPO authors' recipe). LoRA adapters come back merged. `progress(step, steps, loss)`
    is called after each step, besides the `tokenmill.progress` stage `stage`. `history`, when
    given, receives the held-out split's size, its losses [(step, loss)] and the kept step."""
    if not prompts:
        raise ValueError("finetune: no training sequences")
    recipe = recipe or ContrastTrainConfig()
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tok, _ = load_hf(base, device="cpu" if not torch.cuda.is_available() else None, dtype="float32")
    if recipe.method == "lora":
        params = add_lora(model, recipe.lora_targets, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    examples = [(list(p) + list(c), len(p)) for p, c in zip(prompts, completions)]
    n_val = held_out(len(examples), recipe.val_examples)
    examples, val = examples[: len(examples) - n_val], examples[len(examples) - n_val:]
    steps = planned_steps(len(examples), recipe)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    sched = (get_cosine_schedule_with_warmup(opt, recipe.warmup_steps, steps) if recipe.schedule == "cosine"
             else get_constant_schedule_with_warmup(opt, recipe.warmup_steps))
    dev = model.device
    progress_hook.start(stage, steps)
    model.train()
    losses, evals, best = [], [], None
    for step, idx in enumerate(_batches(len(examples), recipe.batch, steps, rng)):
        ids, attn, labels = pad_batch([examples[i] for i in idx], tok.pad_token_id)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), labels=labels.to(dev)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress_hook.advance(stage, note=f"loss {losses[-1]:.3f}")
        if progress:
            progress(step + 1, steps, losses[-1])
        if val and (step + 1) % recipe.eval_steps == 0:
            evals.append((step + 1, _held_out_loss(model, val, recipe.batch, tok.pad_token_id)))
            if best is None or evals[-1][1] < best[1]:  # only the trained weights change: keep copies of those
                best = (step + 1, evals[-1][1], [p.detach().clone() for p in params])
    model.eval()
    if best is not None:
        with torch.no_grad():
            for p, kept in zip(params, best[2]):
                p.copy_(kept)
    if history is not None:
        history.update({"val_examples": n_val, "evals": evals, "kept_step": best[0] if best else len(losses)})
    if recipe.method == "lora":
        merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok, losses


@torch.no_grad()
def _held_out_loss(model, val: list, batch: int, pad_id: int) -> float:
    was_training = model.training
    model.eval()
    dev, losses = model.device, []
    for i in range(0, len(val), batch):
        ids, attn, labels = pad_batch(val[i: i + batch], pad_id)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            losses.append(float(model(input_ids=ids.to(dev), attention_mask=attn.to(dev), labels=labels.to(dev)).loss))
    model.train(was_training)
    return sum(losses) / len(losses)


def save_model(model, tok, path: str, dtype: str = "bfloat16") -> None:
    """The model (in `dtype`) and its tokenizer as a Hugging Face directory."""
    model.to(getattr(torch, dtype)).save_pretrained(path)
    tok.save_pretrained(path)
