"""The one KEY=VALUE parser: CLI options that take pairs (--engine-option, --param, --model
ROLE=MODEL) and file sources' meta fields (KEY=FIELD) split and read pairs here.

Below the CLI, so a source, flow or study can read pairs without importing typer.
"""

from __future__ import annotations

import json

from tokenmill.errors import TokenmillError


def split_pair(text: str) -> tuple[str, str] | None:
    """"key = value" → ("key", "value"), both stripped; the first "=" splits, so a value may
    hold more. None where there is no "="."""
    key, sep, value = text.partition("=")
    return (key.strip(), value.strip()) if sep else None


def parse_value(text: str):
    """A pair's value as JSON where it is JSON (4096, 0.5, true, [1, 2], null), None for
    "none", else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return None if text.lower() == "none" else text


def parse_pairs(pairs: list[str], option: str, example: str, coerce: bool = True, text_keys: tuple[str, ...] = ()) -> dict:
    """The one KEY=VALUE parser of every option that takes pairs (the first "=" splits, so a
    value may hold more). With `coerce`, a value is read as JSON where it is JSON (4096, 0.5,
    true, [1, 2], null) and as None for "none"; anything else, and any key of `text_keys`
    (ids such as a config id "1234e567", which JSON would read as a number), stays text."""
    out = {}
    for pair in pairs:
        key, value = split_pair(pair) or ("", "")
        if not key or (not coerce and not value):
            raise TokenmillError(f"{option} {pair!r} is not {'KEY=VALUE' if coerce else 'ROLE=MODEL'}", fix=f"e.g. {option} {example}")
        out[key] = parse_value(value) if coerce and key not in text_keys else value
    return out
