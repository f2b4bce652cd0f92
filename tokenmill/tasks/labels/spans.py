"""Entity spans in completions, and the tokens each span covers.

An *extractor* finds spans in text: `(char_start, char_end, text, entity_type)` with
`char_end` exclusive, offsets into `rollouts.completion`. Built in:

  kb       the bios world's knowledge-base fields, read by the world's own sentence
           patterns: birth_year, city, occupation, employer (every occurrence)
  numbers  integers and decimals                       "42", "3.5", "1,200"
  dates    years 1000–2099 and "March 3, 1962"-style dates
  names    capitalised multi-word names                 "Mira Tolven", "Quill & Oak"
  titles   quoted titles                                "The Long Road", “Kestrin Tales”

A new extractor is one `Extractor` subclass with a `name` and `find(text)`, registered
in `EXTRACTORS`. Spans may overlap and touch; each is its own row.

Token mapping: token j of a rollout covers characters [s_j, e_j) (`tokens.char_start`,
`char_end`). A span [a, b) covers every token that overlaps it: s_j < b and e_j > a. As
offsets grow monotonically within a rollout, start_pos = #{j : e_j ≤ a} and end_pos =
#{j : s_j < b} − 1, two `searchsorted` calls over all spans of all rollouts at once
(each rollout's offsets shifted into its own range). Empty tokens (EOS) never overlap.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np

from tokenmill.errors import TokenmillError


class Extractor(ABC):
    name: str = ""

    @abstractmethod
    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """[(char_start, char_end, text, entity_type)] of the entities in `text`."""


class RegexExtractor(Extractor):
    patterns: list[tuple[re.Pattern, str]] = []  # (pattern with one group, entity type)

    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        out = []
        for pat, kind in self.patterns:
            for m in pat.finditer(text):
                a, b = m.span(1)
                out.append((a, b, text[a:b], kind))
        return out


class KBExtractor(RegexExtractor):
    """The bios knowledge-base fields, located by the world's own sentence patterns."""

    name = "kb"

    def __init__(self):
        from tokenmill.sources.worlds.bios import _PATTERNS

        self.patterns = [(re.compile(p.pattern), attr) for attr, p in _PATTERNS.items()]


class NumberExtractor(RegexExtractor):
    name = "numbers"
    patterns = [(re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w])"), "number")]


_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"


class DateExtractor(RegexExtractor):
    name = "dates"
    patterns = [(re.compile(rf"\b((?:{_MONTHS}) \d{{1,2}}, \d{{4}})\b"), "date"),
                (re.compile(r"(?<![\d,.])\b((?:1\d|20)\d\d)\b(?![,.]\d)"), "year")]

    def find(self, text):
        spans = super().find(text)
        dates = [(a, b) for a, b, _, k in spans if k == "date"]
        # a year inside a full date is part of that date, not a second entity
        return [s for s in spans if s[3] == "date" or not any(a <= s[0] and s[1] <= b for a, b in dates)]


class NameExtractor(RegexExtractor):
    name = "names"
    _word = r"[A-Z][a-z]+(?:['-][A-Za-z]+)?"
    patterns = [(re.compile(rf"(?<![\w'])({_word}(?:(?: | & | of | de | van ){_word})+)(?![\w'])"), "name")]


class TitleExtractor(RegexExtractor):
    name = "titles"
    patterns = [(re.compile(r'"([^"\n]{2,80})"'), "title"), (re.compile(r"“([^”\n]{2,80})”"), "title")]


EXTRACTORS: dict[str, type[Extractor]] = {e.name: e for e in (KBExtractor, NumberExtractor, DateExtractor,
                                                                 NameExtractor, TitleExtractor)}
GENERIC = ("numbers", "dates", "names", "titles")


def get_extractor(name: str) -> Extractor:
    if name not in EXTRACTORS:
        raise TokenmillError(f"unknown span extractor {name!r}", fix=f"choose from {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name]()


def extract(texts: list[str], extractors: list[Extractor]) -> dict[str, np.ndarray]:
    """Spans of every text: columns row (index into `texts`), char_start, char_end, text,
    entity_type, extractor — sorted by (row, char_start, char_end)."""
    rows, starts, ends, spans, kinds, names = [], [], [], [], [], []
    for i, text in enumerate(texts):  # per text, not per token: regexes scan whole strings
        for ex in extractors:
            for a, b, s, k in ex.find(text or ""):
                rows.append(i), starts.append(a), ends.append(b), spans.append(s), kinds.append(k), names.append(ex.name)
    order = np.lexsort((np.array(ends, np.int64), np.array(starts, np.int64), np.array(rows, np.int64))) if rows else []
    cols = {"row": np.array(rows, np.int64), "char_start": np.array(starts, np.int64), "char_end": np.array(ends, np.int64),
            "text": np.array(spans, dtype=object), "entity_type": np.array(kinds, dtype=object),
            "extractor": np.array(names, dtype=object)}
    return {k: v[order] if len(order) else v for k, v in cols.items()}


def spans_to_tokens(span_row: np.ndarray, span_start: np.ndarray, span_end: np.ndarray, tok_start: np.ndarray,
                    tok_end: np.ndarray, tok_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start_pos, end_pos), inclusive, of the tokens each span [start, end) overlaps.

    `tok_start`/`tok_end` are the concatenated char offsets of all rows' tokens,
    `tok_lengths` the tokens per row. A span over no token (e.g. beyond the text) gets
    end_pos < start_pos.
    """
    lengths = np.asarray(tok_lengths, np.int64)
    first = np.cumsum(lengths) - lengths  # each row's first token index
    seq = np.repeat(np.arange(len(lengths)), lengths)
    width = int(max(tok_end.max(initial=0), span_end.max(initial=0))) + 1
    shift = seq * width  # rows into disjoint ranges: one sorted array for all of them
    g_end, g_start = tok_end + shift, tok_start + shift
    s_shift = span_row * width
    start = np.searchsorted(g_end, span_start + s_shift, side="right")  # tokens ending at or before a
    end = np.searchsorted(g_start, span_end + s_shift, side="left") - 1  # last token starting before b
    return (start - first[span_row]).astype(np.int32), (end - first[span_row]).astype(np.int32)
