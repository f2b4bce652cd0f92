"""Held-out evaluation of trained models → table `model_eval`.

Greedy (temperature 0) generation on a world's held-out split, verified by the world's
own checker — the same generate → verify code as the rollout flow. An evaluation is keyed
by a hash of the model (its artifact id, or the base model's name) and the settings, so
re-running a pipeline evaluates nothing twice.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import ids
from tokenmill.tasks.eval_config import EvalConfig
from tokenmill.engines import SamplingParams
from tokenmill.models.chat import PromptFormat
from tokenmill.schema import MODEL_EVAL
from tokenmill.sources.worlds import get_world
from tokenmill.tasks.generate import cached_engine, generate
from tokenmill.tasks.verify import verify


def accuracy(model_path: str, world: str, split: str, n: int, engine: str = "hf", max_tokens: int = 96,
             seed: int = 1234) -> dict:
    """{prompts, accuracy, mean_reward, verdicts, details} of greedy generation on `n` prompts."""
    prompts = get_world(world).prompts(n, seed=seed, split=split)
    params = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=1)
    # rendered as the rollout flow renders by default: a chat model gets its template
    rollouts, _ = generate(prompts, cached_engine(engine, model_path), params, PromptFormat())
    checked = verify(rollouts, {p.prompt_id: p for p in prompts})
    verdicts = checked.column("verdict").to_pylist()
    return {"prompts": len(prompts), "accuracy": sum(v == "correct" for v in verdicts) / len(verdicts),
            "mean_reward": float(pc.mean(checked.column("reward")).as_py()), "checked": checked}


def evaluate_model(lake, run_id: str, model: str, model_path: str, cfg: EvalConfig, arm: str | None = None,
                   engine: str = "hf") -> dict:
    """One `model_eval` row for `model` (loaded from `model_path`), computed once. The row
    returned names `arm`, the caller's name for the model: a model evaluated before under
    another arm's name (the same settings trained twice) keeps its stored row, first name
    and all, and is reported under this one."""
    eval_id = ids.content_id("model-eval", model, cfg.model_dump_json(), engine)
    done = lake.read("model_eval", run_id, filter=pc.field("eval_id") == eval_id)
    if done.num_rows:
        return {**done.to_pylist()[0], "arm": arm}
    t0 = time.time()
    out = accuracy(model_path, cfg.world, cfg.split, cfg.prompts, engine, cfg.max_tokens, cfg.seed)
    row = {"eval_id": eval_id, "model": model, "arm": arm, "world": cfg.world, "split": cfg.split,
           "prompts": out["prompts"], "accuracy": out["accuracy"], "mean_reward": out["mean_reward"],
           "seconds": time.time() - t0}
    lake.commit("model_eval", run_id, pa.Table.from_pylist([row], schema=MODEL_EVAL.schema))
    return row
