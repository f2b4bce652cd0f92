"""Greedy held-out accuracy of models on the worlds (the README's model table).

arithmetic and code: the test split (problems never trained on). bios: people seen in
training (`train`, knowledge recall) and people never seen (`test`, where every stated
fact is made up). Uses the same generate → verify code as the rollout flow.
"""

from __future__ import annotations

import json

import pyarrow as pa

from tokenmill.engines import SamplingParams
from tokenmill.sources.worlds import get_world
from tokenmill.tasks.generate import cached_engine, generate
from tokenmill.tasks.verify import verify

SUITE = (("arithmetic", "test"), ("code", "test"), ("bios", "train"), ("bios", "test"))


def evaluate(models: list[str], n: int = 100, engine: str = "hf", max_tokens: int = 96) -> pa.Table:
    rows = []
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=1)
    for model in models:
        eng = cached_engine(engine, model)
        for world_name, split in SUITE:
            prompts = get_world(world_name).prompts(n, seed=1234, split=split)
            rollouts, _ = generate(prompts, eng, params)
            checked = verify(rollouts, {p.prompt_id: p for p in prompts})
            verdicts = checked.column("verdict").to_pylist()
            details = [json.loads(d) for d in checked.column("verify_detail").to_pylist()]
            row = {
                "model": model, "world": world_name, "split": split, "prompts": len(prompts),
                "accuracy": round(sum(v == "correct" for v in verdicts) / len(verdicts), 3),
                "mean_reward": round(sum(checked.column("reward").to_pylist()) / len(verdicts), 3),
                "parses": None,
            }
            if world_name == "code":
                row["parses"] = round(sum(bool(d.get("parsed")) for d in details) / len(details), 3)
            rows.append(row)
    return pa.Table.from_pylist(rows)
