"""A synthetic world: a seeded generator of prompts with an exact verifier.

Subclasses implement `_instance(rng)` (one random problem: prompt, gold completion,
meta) and `verify(prompt, completion)`. Train/test membership is a property of the
problem itself (a hash of its identity), not of the seed, so no seed can leak a test
problem into training data.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from tokenmill import ids
from tokenmill.errors import SourceError
from tokenmill.sources.base import Prompt

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class Instance:
    prompt: str
    solution: str  # the gold completion the tiny models are trained on
    reference: str  # the reference answer (what `Answer:` should say, or the facts)
    meta: dict[str, Any]
    key: str  # identity that decides the split


@dataclass(frozen=True)
class Verdict:
    reward: float  # in [0, 1]
    verdict: str  # correct | incorrect | invalid
    detail: dict[str, Any] = field(default_factory=dict)


def split_of(key: str, test_fraction: float) -> str:
    bucket = int(ids.content_id("split", key)[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


class World(ABC):
    name: str
    test_fraction: float = 0.1
    version: str = "1"
    # the answer format, said to a chat model after the prompt (the tiny models learned it
    # from the solutions; models/chat.py appends it only when a chat template is applied)
    chat_instruction: str | None = None

    @abstractmethod
    def _instance(self, rng: random.Random) -> Instance: ...

    @abstractmethod
    def verify(self, prompt: Prompt, completion: str) -> Verdict: ...

    # a world that can check every step of a solution says where the first wrong one starts
    # (the `process` label family's oracle); None: this world has no step checker
    first_error = None

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise SourceError(f"unknown split {split!r}", where=f"world:{self.name}", fix=f"use one of {SPLITS}")

    def instances(self, n: int, seed: int = 0, split: str = "test") -> list[Instance]:
        """`n` distinct instances of `split`, deterministic in (`seed`, `split`)."""
        self.check_split(split)
        rng = random.Random(f"{self.name}:{seed}:{split}")
        out: dict[str, Instance] = {}
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 200 * n + 10_000:
                raise SourceError(
                    f"only {len(out)} distinct {split} problems found, {n} asked",
                    where=f"world:{self.name}",
                    fix="ask for fewer prompts",
                )
            inst = self._instance(rng)
            if split != "all" and split_of(inst.key, self.test_fraction) != split:
                continue
            out.setdefault(inst.prompt, inst)
        return list(out.values())

    def prompts(self, n: int, seed: int = 0, split: str = "test") -> list[Prompt]:
        return [
            Prompt(
                source=self.name,
                prompt=inst.prompt,
                world=self.name,
                split=split_of(inst.key, self.test_fraction),
                reference=inst.reference,
                meta=inst.meta,
            )
            for inst in self.instances(n, seed, split)
        ]


@dataclass
class WorldSource:
    """A world as a `Source`: `n` prompts of `split`, drawn with `seed`."""

    world: World
    n: int
    seed: int = 0
    split: str = "test"

    @property
    def name(self) -> str:
        return self.world.name

    def load(self) -> list[Prompt]:
        return self.world.prompts(self.n, self.seed, self.split)
