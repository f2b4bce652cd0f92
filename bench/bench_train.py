"""Training throughput: token-weighted SFT against plain HF `Trainer` and TRL's `SFTTrainer`.

    python bench/bench_train.py [--steps 100] [--batch 16] [--model tiny-small]

One dataset, written the way `tokenmill curate` writes it: the (prompt, solution) pairs of
every world's train split, tokenised by the model's tokenizer, with a random per-token
weight in [0.1, 2) on each completion token. Each trainer then runs the same number of
steps at the same batch size, learning rate and precision (fp32 on CPU; on GPU tokenmill
keeps fp32 weights under bf16 autocast) from the same base model:

* tokenmill weighted   `train_weighted(weighting="dataset")`: weighted cross-entropy
* tokenmill plain      `train_weighted(weighting="plain")`: the loss mask as the weights
* HF Trainer           `transformers.Trainer`, labels −100 on prompt and padding
* TRL SFTTrainer       `trl.SFTTrainer` on `input_ids` + `completion_mask` (completion-only loss)

Printed: completion (loss) tokens per second of the training loop (model loading and
saving excluded for all), and the ratio of tokenmill weighted to each baseline (target:
≥ 1, no slower).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def dataset(lake, model: str, seed: int = 0) -> str:
    import numpy as np
    import pyarrow as pa

    from tokenmill import datasets as D
    from tokenmill.engines.hf import load_tokenizer
    from tokenmill.models.builder import corpus, encode_pairs

    tok = load_tokenizer(model)
    pairs = [p for rows in corpus(scale=0.25, seed=seed).values() for p in rows]
    enc = encode_pairs(tok, pairs)
    rng = np.random.default_rng(seed)
    rows = pa.table({
        "rollout_id": [f"x{i}" for i in range(len(enc))], "run_id": ["bench"] * len(enc),
        "prompt_token_ids": [ids[:n] for ids, n in enc], "completion_token_ids": [ids[n:] for ids, n in enc],
        "weights": [rng.uniform(0.1, 2.0, len(ids) - n).astype(np.float32).tolist() for ids, n in enc],
    })
    return D.write(lake, D.build("sequences", rows), recipe="bench", kind="sequences", params={}, runs=["bench"])["dataset_id"]


def hf_baseline(path, model: str, steps: int, batch: int, lr: float, trl: bool) -> tuple[float, int]:
    """(loop seconds, loss tokens) of HF Trainer or TRL SFTTrainer on the dataset."""
    import torch
    from transformers import Trainer, TrainingArguments

    from tokenmill import datasets as D
    from tokenmill.engines.hf import load_hf

    model_, tok, _ = load_hf(model, dtype="float32")
    model_.train()
    ds = D.hf_dataset(path).select_columns(["input_ids", "loss_mask"])
    counted = {"tokens": 0}
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
                  weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0,
                  logging_steps=10_000, save_strategy="no", report_to=[], disable_tqdm=True,
                  dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), seed=0)
    if trl:
        from trl import SFTConfig, SFTTrainer

        ds = ds.rename_column("loss_mask", "completion_mask")
        trainer = SFTTrainer(model=model_, processing_class=tok, train_dataset=ds,
                             args=SFTConfig(**common, completion_only_loss=True, max_length=None, packing=False))
        inner = trainer.data_collator
    else:
        def inner(examples):
            width = max(len(e["input_ids"]) for e in examples)
            ids = torch.full((len(examples), width), tok.pad_token_id)
            labels = torch.full((len(examples), width), -100)
            attn = torch.zeros((len(examples), width), dtype=torch.long)
            for i, e in enumerate(examples):
                n = len(e["input_ids"])
                ids[i, :n] = torch.tensor(e["input_ids"])
                attn[i, :n] = 1
                mask = torch.tensor(e["loss_mask"], dtype=torch.bool)
                labels[i, :n][mask] = ids[i, :n][mask]
            return {"input_ids": ids, "attention_mask": attn, "labels": labels}

        trainer = Trainer(model=model_, args=TrainingArguments(**common, remove_unused_columns=False),
                          train_dataset=ds, data_collator=inner)

    def counting(examples):
        out = inner(examples)
        counted["tokens"] += int((out["labels"][:, 1:] != -100).sum())
        return out

    trainer.data_collator = counting
    t0 = time.time()
    trainer.train()
    return time.time() - t0, counted["tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--model", default="tiny-small")
    args = ap.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from rich.console import Console
    from rich.table import Table

    from tokenmill import datasets as D
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks.train.weighted import train_weighted

    console = Console(width=140)
    lake = Lake(tempfile.mkdtemp(prefix="bench-train-"))
    ds = dataset(lake, args.model)
    m = D.read_manifest(lake, ds)
    path = D.local_path(lake, ds)
    results = {}
    for name, weighting in (("tokenmill weighted", "dataset"), ("tokenmill plain", "plain")):
        with console.status(f"{name}…"):
            out = train_weighted(lake, ds, args.model, "sft", weighting=weighting, steps=args.steps, lr=args.lr,
                                 batch=args.batch, log_every=args.steps, run_id="bench")
        loop = lake.read("train_metrics", "bench").to_pylist()
        row = next(r for r in loop if r["artifact_id"] == out["artifact_id"])
        results[name] = (row["seconds"], row["tokens"])
    for name, trl in (("HF Trainer", False), ("TRL SFTTrainer", True)):
        with console.status(f"{name}…"):
            results[name] = hf_baseline(path, args.model, args.steps, args.batch, args.lr, trl)

    ours = results["tokenmill weighted"][1] / results["tokenmill weighted"][0]
    table = Table(title=f"SFT training throughput: {args.model}, {args.steps} steps × batch {args.batch}, "
                        f"{m['rows']:,} examples")
    for col in ("trainer", "loop s", "loss tokens", "loss tokens/s", "tokenmill weighted / this"):
        table.add_column(col, justify="left" if col == "trainer" else "right")
    for name, (sec, toks) in results.items():
        rate = toks / sec
        table.add_row(name, f"{sec:.2f}", f"{toks:,}", f"{rate:,.0f}", f"{ours / rate:.2f}×")
    console.print(table)


if __name__ == "__main__":
    main()
