"""Entity spans in completions, and the tokens each span covers.

An *extractor* finds spans in text: `(char_start, char_end, text, entity_type)` with
`char_end` exclusive, offsets into `rollouts.completion`. Built in:

  kb       a knowledge-base world's own claims, `world.claims(text)` per rollout's world
           (`extract_kb`): bios birth_year, city, occupation, employer; countries
           capital, currency, language, region, neighbour (every occurrence). Without a
           world (`find(text)`) it reads the bios sentence patterns.
  numbers  integers and decimals                       "42", "3.5", "1,200"
  dates    years 1000–2099 and "March 3, 1962"-style dates
  names    capitalised names, Unicode, one word or more "Mira Tolven", "Quill & Oak",
                                                        "São Paulo", "O'Brien", "Canberra"
  titles   quoted titles                                "The Long Road", “Kestrin Tales”

Names: a word is an uppercase letter (any script's, `charclass.UPPER`) and letters,
apostrophes or hyphens ("Jean-Luc", "N'Djamena", "McDonald"); words join by a space,
" & " or a lower-case particle (of, de, da, van, von, …). A span made only of stoplist
words (sentence-initial function words "The", "It", "In", …, months, weekdays) is no
name; a sentence-initial stoplist word is cut from the front ("In Canberra" →
"Canberra", "The Hague is" → "Hague"), but mid-sentence a capitalised "The" belongs to
the name ("moved to The Hague" → "The Hague"): capitalised there, it can only be part of it.

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

from tokenmill.charclass import LOWER, UPPER
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


class KBExtractor(Extractor):
    """A knowledge-base world's claims, located by the world's own reader (`claims`)."""

    name = "kb"

    def find(self, text, world=None):
        """The claims of `world` (one with a `claims` method) in `text`; without a world,
        the bios sentence patterns."""
        if world is None:
            from tokenmill.sources.worlds.bios import BiosWorld

            world = BiosWorld()
        return world.claims(text) if hasattr(world, "claims") else []


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


_LETTER = r"(?:[^\W\d_]|[\u0300-\u036f])"  # any script's letter, or a combining mark
# an uppercase letter, then letters, inner apostrophes and hyphens, at least one lower-case letter
_NAME_WORD = rf"(?:{UPPER}['’])?{UPPER}(?:{_LETTER}|['’\-](?={_LETTER}))*?{LOWER}(?:{_LETTER}|['’\-](?={_LETTER}))*"
_PARTICLES = "of|de|da|do|dos|del|della|di|du|la|le|van|von|der|den|bin|ibn|al|y"
_NAME_STOP = frozenset("""
    A An The This That These Those It Its He She They We I You His Her Their Our My Your Me Him Them Us
    In On At By For From With Without As To Of Into Onto Over Under After Before During Since Until Through
    And But Or Nor So Yet If When While Where Whereas Because Although Though Unless Whether Then There Here
    Yes No Not However Also Moreover Furthermore Meanwhile Therefore Thus Hence Instead Otherwise Still Indeed
    What Which Who Whom Whose Why How Some Many Most All Each Every Both Few Several Such Any None One
    Is Are Was Were Be Been Being Has Have Had Do Does Did Can Could Will Would Shall Should May Might Must
    Mr Mrs Ms Dr Sir Please Thanks Today Yesterday Tomorrow Answer Note
    January February March April May June July August September October November December
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday
""".split())


def _sentence_start(text: str, a: int) -> bool:
    """Whether `a` starts a sentence: only blanks, quotes, brackets or markdown since the
    text's start, a line break or a . ! ? :"""
    j = a - 1
    while j >= 0 and text[j] in " \t\"'“‘([*_#>-•–—":
        j -= 1
    return j < 0 or text[j] in ".!?:\n"


def _capital(word: str) -> bool:
    return word[0].isupper() or word[0].istitle()


class NameExtractor(Extractor):
    name = "names"
    _join = rf"(?:[ \u00a0]|[ \u00a0](?:&|{_PARTICLES})[ \u00a0])"  # "Mira Tolven", "Quill & Oak", "da Vinci"
    pattern = re.compile(rf"(?<![\w'’])({_NAME_WORD}(?:{_join}{_NAME_WORD})*)(?![\w'’])")
    _split = re.compile(r"\S+")

    def find(self, text):
        out = []
        for m in self.pattern.finditer(text):  # one scan per text; the stoplist only looks at each match's first words
            a, b = m.span(1)
            words = list(self._split.finditer(text, a, b))
            k = 0
            if _sentence_start(text, a):  # "In Canberra" → "Canberra"; mid-sentence "The Hague" stays whole
                while k < len(words) and words[k].group() in _NAME_STOP:
                    k += 1
            while k < len(words) and not _capital(words[k].group()):  # a particle or "&" left in front
                k += 1
            rest = [w.group() for w in words[k:]]
            if not rest or all(w in _NAME_STOP or not _capital(w) for w in rest):
                continue  # "It", "The", "In May": function words only
            a = words[k].start()
            out.append((a, b, text[a:b], "name"))
        return out


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
    # per text, not per token: regexes scan whole strings
    return _columns((i, ex.name, span) for i, text in enumerate(texts) for ex in extractors for span in ex.find(text or ""))


def extract_kb(texts: list[str], worlds: list) -> dict[str, np.ndarray]:
    """`extract` with the kb extractor, each text read by its own world (`worlds[i]`, a
    World or None): rows whose world has no `claims` get no span."""
    kb = KBExtractor()
    return _columns((i, kb.name, span) for i, (text, w) in enumerate(zip(texts, worlds))
                    if w is not None and hasattr(w, "claims") for span in kb.find(text or "", w))


def _columns(found) -> dict[str, np.ndarray]:
    """The span columns of (row, extractor name, (a, b, text, entity_type)) items, sorted."""
    rows, starts, ends, spans, kinds, names = [], [], [], [], [], []
    for i, name, (a, b, s, k) in found:
        rows.append(i), starts.append(a), ends.append(b), spans.append(s), kinds.append(k), names.append(name)
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
