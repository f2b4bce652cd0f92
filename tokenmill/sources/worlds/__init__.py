"""The built-in worlds, by name: generated (arithmetic, code, bios) and real data (humaneval, countries)."""

from __future__ import annotations

from functools import lru_cache

from tokenmill.errors import SourceError
from tokenmill.sources.worlds.arithmetic import ArithmeticWorld
from tokenmill.sources.worlds.base import Instance, Verdict, World, WorldSource
from tokenmill.sources.worlds.bios import BiosWorld
from tokenmill.sources.worlds.code import CodeWorld
from tokenmill.sources.worlds.countries import CountriesWorld
from tokenmill.sources.worlds.humaneval import HumanEvalWorld

WORLDS: dict[str, type[World]] = {"arithmetic": ArithmeticWorld, "code": CodeWorld, "bios": BiosWorld,
                               "humaneval": HumanEvalWorld, "countries": CountriesWorld}


def get_world(name: str) -> World:
    try:
        return WORLDS[name]()
    except KeyError:
        raise SourceError(f"unknown world {name!r}", fix=f"choose one of: {', '.join(WORLDS)}") from None


@lru_cache(maxsize=None)
def shared_world(name: str) -> World:
    """One instance per world name for readers that only ask it things (verify, claims, judge):
    a world's knowledge base is built once, not once per rollout or shard."""
    return get_world(name)


def world_with(name: str | None, method: str) -> World | None:
    """The shared world `name` if its class has `method` (e.g. `claims`, `judge`), else None;
    a world without it is never built (building may load data)."""
    cls = WORLDS.get(name) if name else None
    return shared_world(name) if cls is not None and hasattr(cls, method) else None


__all__ = ["WORLDS", "get_world", "shared_world", "world_with", "World", "WorldSource", "Instance", "Verdict"]
