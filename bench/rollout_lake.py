"""What several benchmarks start from: one model's rollouts on one world in a fresh lake (not timed)."""

from __future__ import annotations

import tempfile


def rollout_lake(console, name: str, model: str, world: str, prompts: int, samples: int, temperature: float,
                 max_tokens: int, split: str = "train") -> str:
    """A temporary lake with run "b": `model` on `prompts` × `samples` of `world`; returns its path."""
    from tokenmill.config import RolloutConfig, SamplingConfig, SourceConfig
    from tokenmill.flows.rollouts import rollouts_flow

    root = tempfile.mkdtemp(prefix=f"bench-{name}-")
    with console.status(f"{model} on {prompts} {world} prompts × {samples}…"):
        rollouts_flow(RolloutConfig(lake=root, run_id="b", models=[model],
                                    sources=[SourceConfig(world=world, n=prompts, split=split)],
                                    sampling=SamplingConfig(n=samples, temperature=temperature, max_tokens=max_tokens)))
    return root
