"""The built-in synthetic worlds, by name."""

from __future__ import annotations

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


__all__ = ["WORLDS", "get_world", "World", "WorldSource", "Instance", "Verdict"]
