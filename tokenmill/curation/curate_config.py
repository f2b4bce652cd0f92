"""What the `curate` flow runs (`curate.py`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, RunId, Settings


class CurateConfig(Settings):
    """What the `curate` flow runs: one recipe over one or more runs → a dataset."""

    lake: str = DEFAULT_LAKE
    runs: list[RunId] = Field(min_length=1)
    recipe: str = Field(description="cdpo-pairs, dpo-pairs, weighted-sft, router-set, probe-set or sql:PATH")
    params: dict[str, Any] = Field(default_factory=dict, description="recipe parameters (see `tokenmill curate --help`)")
