"""Held-out evaluation settings (`evaluate` flow → table `model_eval`)."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import Settings


class EvalConfig(Settings):
    """Greedy held-out accuracy of models on one world (`evaluate` flow → table `model_eval`)."""

    world: str = "arithmetic"
    split: str = "test"
    prompts: int = Field(200, ge=1)
    max_tokens: int = Field(96, ge=1)
    seed: int = 1234

    def work_tokens(self) -> int:
        """Most tokens one model's evaluation generates."""
        return self.prompts * self.max_tokens
