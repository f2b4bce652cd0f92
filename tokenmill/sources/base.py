"""What every prompt source yields: `Prompt` records, turned into the `prompts` table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from tokenmill import ids
from tokenmill.schema import PROMPTS


@dataclass(frozen=True)
class Prompt:
    source: str  # source name: a world name or the file's stem
    prompt: str
    world: str | None = None  # set by the synthetic worlds; picks the verifier
    split: str | None = None  # train|test where the source knows it
    reference: str | None = None  # reference answer, if the source has one
    meta: dict[str, Any] = field(default_factory=dict)  # what the verifier checks against

    @property
    def prompt_id(self) -> str:
        return ids.prompt_id(self.source, self.prompt)


class Source(Protocol):
    """A named, deterministic producer of prompts."""

    name: str

    def load(self) -> list[Prompt]: ...


def prompts_table(prompts: list[Prompt]) -> pa.Table:
    """The `prompts` lake table for these prompts (duplicates by prompt_id dropped)."""
    seen: dict[str, Prompt] = {}
    for p in prompts:
        seen.setdefault(p.prompt_id, p)
    rows = list(seen.values())
    return pa.table(
        {
            "prompt_id": [p.prompt_id for p in rows],
            "source": [p.source for p in rows],
            "world": [p.world for p in rows],
            "split": [p.split for p in rows],
            "prompt": [p.prompt for p in rows],
            "reference": [p.reference for p in rows],
            "meta": [ids.canonical_json(p.meta) if p.meta else None for p in rows],
        },
        schema=PROMPTS.schema,
    )


def prompts_from_table(table: pa.Table) -> list[Prompt]:
    """Inverse of `prompts_table` (used by tasks that read prompts back from the lake)."""
    cols = table.to_pydict()
    return [
        Prompt(
            source=cols["source"][i],
            prompt=cols["prompt"][i],
            world=cols["world"][i],
            split=cols["split"][i],
            reference=cols["reference"][i],
            meta=json.loads(cols["meta"][i]) if cols["meta"][i] else {},
        )
        for i in range(table.num_rows)
    ]
