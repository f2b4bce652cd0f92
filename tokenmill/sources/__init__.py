"""Prompt sources: files (JSONL, Parquet, HF datasets on disk) and the synthetic worlds."""

from __future__ import annotations

from tokenmill.sources.base import Prompt, Source, prompts_from_table, prompts_table


def build_source(cfg) -> Source:
    """The `Source` a `config.SourceConfig` describes."""
    from tokenmill.errors import SourceError
    from tokenmill.sources.files import FieldMap, open_source
    from tokenmill.sources.worlds import WorldSource, get_world

    if cfg.world:
        return WorldSource(get_world(cfg.world), cfg.n, cfg.seed, cfg.split)
    if not cfg.path:
        raise SourceError("a source needs a world or a path", fix="e.g. --world arithmetic or --source prompts.jsonl")
    fields = dict(prompt=cfg.prompt_field, meta=tuple(cfg.meta_fields))
    if cfg.reference_field:
        fields["reference"] = cfg.reference_field
    return open_source(cfg.path, FieldMap(**fields), limit=cfg.limit)


__all__ = ["Prompt", "Source", "build_source", "prompts_table", "prompts_from_table"]
