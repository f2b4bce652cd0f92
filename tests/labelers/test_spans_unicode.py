"""The names extractor: Unicode and one-word names, without sentence-initial function words."""

from __future__ import annotations

import pytest

from tokenmill.labelers.hallucination.spans import get_extractor


def _names(text: str) -> list[str]:
    found = get_extractor("names").find(text)
    for a, b, s, kind in found:
        assert text[a:b] == s and kind == "name"
    return [s for _, _, s, _ in found]


@pytest.mark.parametrize("text, names", [
    ("We flew to São Paulo today.", ["São Paulo"]),
    ("I met Zoë Müller and François Lefèvre.", ["Zoë Müller", "François Lefèvre"]),
    ("Nguyễn Văn An lives in Hanoi.", ["Nguyễn Văn An", "Hanoi"]),
    ("O'Brien met Jean-Luc Picard.", ["O'Brien", "Jean-Luc Picard"]),
    ("The capital is Canberra.", ["Canberra"]),
    ("Canberra is the capital.", ["Canberra"]),  # one word, sentence-initial
    ("In Canberra, it rains.", ["Canberra"]),  # a sentence-initial stop word is cut off
    ("She moved to The Hague.", ["The Hague"]),  # mid-sentence, a capitalised "The" is part of the name
    ("The Hague is a city.", ["Hague"]),  # sentence-initial, it cannot be told from the article
    ("Its capital is N'Djamena.", ["N'Djamena"]),
    ("Leonardo da Vinci painted it.", ["Leonardo da Vinci"]),
    ("He works at Quill & Oak.", ["Quill & Oak"]),
    ("we met Олена Петренко there.", ["Олена Петренко"]),  # any cased script (English stoplist)
    ("we met Jose\u0301 Marti\u0301.", ["Jose\u0301 Marti\u0301"]),  # combining accents stay in the word
])
def test_names_are_found(text, names):
    assert _names(text) == names


@pytest.mark.parametrize("text", [
    "The end. It is. This works. They left. He said yes. She did. Its size. A test. An apple.",
    "Yes. No. However, that is all. In the end, we went.",
    "In May we go, on Monday.",  # months and weekdays are dates, not names
    "USA and NATO signed.",  # all capitals: acronyms, not names
    "lower case only, 42 and 3.5",
])
def test_function_words_and_non_names_are_not_names(text):
    assert _names(text) == []
