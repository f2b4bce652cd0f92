"""`tokenmill models build`: train the bundled tokenizer and the two tiny Llama models.

Both models share one byte-level BPE tokenizer trained on the worlds' text and are
trained from scratch on gold solutions of the worlds' *train* splits (completion-only
next-token loss). `tiny-large` has more layers, width and steps than `tiny-small`, so
the pair disagrees in useful places: the large one solves more arithmetic, remembers
more biographies, writes more passing code. Held-out accuracy is measured by
`tokenmill.studies.model_table` and printed in docs/USER_GUIDE.md.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tokenmill.models.registry import TINY_DIR
from tokenmill.models.tokenizer import BOS, EOS, PAD, train_tokenizer
from tokenmill.sources.worlds import get_world


@dataclass(frozen=True)
class TinySpec:
    hidden: int
    layers: int
    heads: int  # head_dim = hidden // heads must be >= 32 for vLLM's CPU attention
    intermediate: int
    steps: int
    lr: float
    batch: int = 32
    seed: int = 0


SPECS = {
    "tiny-small": TinySpec(hidden=64, layers=2, heads=2, intermediate=192, steps=6000, lr=3e-3),
    "tiny-large": TinySpec(hidden=128, layers=4, heads=4, intermediate=384, steps=4000, lr=2e-3),
}
MIX = {"arithmetic": 0.5, "code": 0.25, "bios": 0.25}
CORPUS_SIZE = {"arithmetic": 40000, "code": 8000, "bios": 1440}
MAX_POSITIONS = 256


def corpus(scale: float = 1.0, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """(prompt, solution) pairs of every world's train split."""
    out = {}
    for name, n in CORPUS_SIZE.items():
        world = get_world(name)
        insts = world.instances(max(8, int(n * scale)), seed=seed, split="train")
        out[name] = [(i.prompt, i.solution) for i in insts]
    return out


def save_tokenizer(pairs: dict[str, list[tuple[str, str]]], out_dir: Path, vocab_size: int = 1024):
    from transformers import PreTrainedTokenizerFast

    texts = [p + s for rows in pairs.values() for p, s in rows]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts, vocab_size), bos_token=BOS, eos_token=EOS, pad_token=PAD,
        model_max_length=MAX_POSITIONS,
    )
    tok.save_pretrained(out_dir)
    return tok


def encode_pairs(tok, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Each pair → (token ids of BOS+prompt+solution+EOS, number of prompt tokens)."""
    prompts = tok([p for p, _ in pairs])["input_ids"]
    sols = tok([s for _, s in pairs], add_special_tokens=False)["input_ids"]
    return [(p + s + [tok.eos_token_id], len(p)) for p, s in zip(prompts, sols)]


def pad_batch(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (seq, n_prompt) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        attn[row, : len(seq)] = 1
    return ids, attn, labels


def train_model(spec: TinySpec, tok, data: dict[str, list], steps: int | None = None, progress=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.heads, intermediate_size=spec.intermediate,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    steps = steps or spec.steps
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    worlds, weights = list(MIX), list(MIX.values())
    model.train()
    losses = []
    for step in range(steps):
        picks = rng.choices(worlds, weights, k=spec.batch)
        ids, attn, labels = pad_batch([rng.choice(data[w]) for w in picks], tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, sum(losses[-50:]) / len(losses[-50:]))
    model.eval()
    return model, losses


def build(out_dir: Path = TINY_DIR, names: tuple[str, ...] = tuple(SPECS), scale: float = 1.0,
          steps: int | None = None, progress_factory=None) -> dict:
    """Train the tokenizer and the models into `out_dir/<name>/`; returns build info."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = corpus(scale)
    tok_dir = out_dir / "_tokenizer"
    tok = save_tokenizer(pairs, tok_dir)
    data = {w: encode_pairs(tok, rows) for w, rows in pairs.items()}
    info = {}
    for name in names:
        spec = SPECS[name]
        t0 = time.time()
        progress = progress_factory(name) if progress_factory else None
        model, losses = train_model(spec, tok, data, steps, progress)
        target = out_dir / name
        tmp = out_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta = {"spec": asdict(spec), "steps": steps or spec.steps, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
                "train_seconds": round(time.time() - t0, 1), "params": sum(p.numel() for p in model.parameters()),
                "corpus": {w: len(r) for w, r in pairs.items()}, "scale": scale}
        (tmp / "tokenmill_build.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # a model directory appears whole or not at all
        info[name] = meta
    shutil.rmtree(tok_dir, ignore_errors=True)
    return info
