"""Greedy held-out accuracy of models on the worlds (docs/USER_GUIDE.md's model table).

arithmetic and code: the test split (problems never trained on). bios: people seen in
training (`train`, knowledge recall) and people never seen (`test`, where every stated
fact is made up). Uses the same generate → verify code as the rollout flow.
"""

from __future__ import annotations

import json

import pyarrow as pa

from tokenmill.tasks.evaluate import accuracy

SUITE = (("arithmetic", "test"), ("code", "test"), ("bios", "train"), ("bios", "test"))


def evaluate(models: list[str], n: int = 100, engine: str = "hf", max_tokens: int = 96) -> pa.Table:
    rows = []
    for model in models:
        for world_name, split in SUITE:
            out = accuracy(model, world_name, split, n, engine, max_tokens)
            row = {"model": model, "world": world_name, "split": split, "prompts": out["prompts"],
                   "accuracy": round(out["accuracy"], 3), "mean_reward": round(out["mean_reward"], 3), "parses": None}
            if world_name == "code":
                details = [json.loads(d) for d in out["checked"].column("verify_detail").to_pylist()]
                row["parses"] = round(sum(bool(d.get("parsed")) for d in details) / len(details), 3)
            rows.append(row)
    return pa.Table.from_pylist(rows)
