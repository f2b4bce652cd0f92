"""Unicode letter classes for `re`, which has no `\\p{Lu}`.

  UPPER   a character class of the Basic Multilingual Plane's uppercase and titlecase
          letters (`str.isupper` or `str.istitle`): "A", "É", "Ő", "Ǆ", "Д"
  LOWER   lowercase letters, modifier letters (Lm, e.g. the ʻokina) and combining marks
          (Mn/Mc, so decomposed "é" = "e" + U+0301 stays one word)

Both are built once at import from 65,536 code points, compressed into ranges.
"""

from __future__ import annotations

import unicodedata


def _char_class(pred) -> str:
    """`[...]` of the BMP code points where `pred(char)` holds, as escaped ranges."""
    ranges: list[list[int]] = []
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF or not pred(chr(cp)):  # surrogates are no characters
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    esc = (lambda cp: f"\\u{cp:04x}")
    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


UPPER = _char_class(lambda c: c.isupper() or c.istitle())
LOWER = _char_class(lambda c: c.islower() or unicodedata.category(c) in ("Lm", "Mn", "Mc"))
