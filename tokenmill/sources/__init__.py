"""Prompt sources: files (JSONL, Parquet, HF datasets on disk), the synthetic worlds and the
packaged benchmarks (`humaneval`), each named by `SourceConfig`."""

from __future__ import annotations

import os
from dataclasses import replace

from tokenmill.sources.base import Prompt, Source, prompts_from_table, prompts_table


def build_source(cfg) -> Source:
    """The `Source` a `config.SourceConfig` describes.

    A `path` that is no file but names a world (`humaneval`, `countries`, …) is that world:
    ``--source humaneval --limit 20`` is its first 20 problems (a benchmark's own size, or
    the config's `n`, without a limit).
    """
    from tokenmill.errors import SourceError
    from tokenmill.sources.files import FieldMap, open_source
    from tokenmill.sources.worlds import WORLDS, WorldSource, get_world

    if cfg.world:
        source = WorldSource(get_world(cfg.world), cfg.n, cfg.seed, cfg.split)
    elif not cfg.path:
        raise SourceError("a source needs a world or a path", fix="e.g. --world arithmetic or --source prompts.jsonl")
    elif cfg.path in WORLDS and not os.path.exists(cfg.path):
        world = get_world(cfg.path)
        source = WorldSource(world, cfg.limit or getattr(world, "size", None) or cfg.n, cfg.seed, cfg.split)
    else:
        fields = dict(prompt=cfg.prompt_field, meta=tuple(cfg.meta_fields))
        if cfg.reference_field:
            fields["reference"] = cfg.reference_field
        if cfg.split_field:
            fields["split"] = cfg.split_field
        source = open_source(cfg.path, FieldMap(**fields), limit=cfg.limit)
    return VerifiedSource(source, cfg.verifier) if cfg.verifier else source


class VerifiedSource:
    """A source whose prompts name their verifier (`meta["verifier"]`, read by tasks/verify.py)."""

    def __init__(self, source: Source, verifier: str):
        self.source, self.verifier, self.name = source, verifier, source.name

    def load(self) -> list[Prompt]:
        return [replace(p, meta={**p.meta, "verifier": self.verifier}) for p in self.source.load()]


__all__ = ["Prompt", "Source", "build_source", "prompts_table", "prompts_from_table"]
