"""Full fine-tuning of a causal LM on (prompt, completion) token sequences, completion-only loss.

Used for cDPO's positive and negative models (tiny models fit a full fine-tune on CPU
in seconds). Examples are drawn with a seeded RNG and padded per batch; the loss is the
mean next-token cross-entropy over completion tokens (EOS included).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from tokenmill.engines.hf import load_hf
from tokenmill.models.builder import pad_batch


def finetune(base: str, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], steps: int = 100,
             lr: float = 5e-4, batch: int = 16, seed: int = 0,
             progress: Callable[[int, int, float], None] | None = None):
    """(model, tokenizer, losses) after `steps` AdamW steps from `base` on the sequences."""
    if not prompts:
        raise ValueError("finetune: no training sequences")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tok, _ = load_hf(base, device="cpu" if not torch.cuda.is_available() else None, dtype="float32")
    examples = [(list(p) + list(c), len(p)) for p, c in zip(prompts, completions)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        ids, attn, labels = pad_batch([rng.choice(examples) for _ in range(batch)], tok.pad_token_id)
        loss = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                     labels=labels.to(model.device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, loss.item())
    model.eval()
    return model, tok, losses
