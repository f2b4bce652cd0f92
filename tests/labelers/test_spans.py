import numpy as np
import pytest

from tokenmill.errors import TokenmillError
from tokenmill.labelers.hallucination.spans import extract, get_extractor, spans_to_tokens


def _map(spans, token_offsets):
    """spans: [(row, a, b)]; token_offsets: per row [(s, e), …] → [(start_pos, end_pos)]."""
    flat = [o for row in token_offsets for o in row]
    rows, a, b = (np.array(x, np.int64) for x in zip(*spans))
    start, end = spans_to_tokens(rows, a, b, np.array([s for s, _ in flat]), np.array([e for _, e in flat]),
                                 np.array([len(r) for r in token_offsets]))
    return list(zip(start.tolist(), end.tolist()))


def test_a_span_covers_every_token_that_overlaps_it_even_when_tokens_split_words():
    # "Vassport." tokenised "V|ass|po|rt." : the span "Vassport" (0–8) ends inside token 3
    toks = [[(0, 1), (1, 4), (4, 6), (6, 9), (9, 9)]]  # last: EOS, empty
    assert _map([(0, 0, 8)], toks) == [(0, 3)]
    assert _map([(0, 2, 5)], toks) == [(1, 2)]  # starts and ends mid-token
    assert _map([(0, 8, 9)], toks) == [(3, 3)]  # the "." shares token 3
    assert _map([(0, 4, 6)], toks) == [(2, 2)]  # exactly one token


def test_overlapping_and_adjacent_spans_map_independently_across_rows():
    toks = [[(0, 2), (2, 4), (4, 6)], [(0, 3), (3, 5)]]
    spans = [(0, 0, 4), (0, 2, 6), (0, 4, 6), (1, 0, 3), (1, 3, 5)]  # overlap, adjacency, second row
    assert _map(spans, toks) == [(0, 1), (1, 2), (2, 2), (0, 0), (1, 1)]


def test_a_span_outside_the_tokens_covers_none():
    start, end = spans_to_tokens(np.array([0]), np.array([10]), np.array([12]), np.array([0, 2]), np.array([2, 4]),
                                 np.array([2]))
    assert end[0] < start[0]


def test_extractors_find_kb_fields_numbers_dates_names_and_titles():
    text = ('Mira Tolven was born in 1962 in Vassport. Mira works as a baker at Quill & Oak. '
            'She wrote "The Long Road" on March 3, 1962 and sold 1,200 copies.')
    found = {name: [(s[2], s[3]) for s in get_extractor(name).find(text)]
             for name in ("kb", "numbers", "dates", "names", "titles")}
    assert found["kb"] == [("1962", "birth_year"), ("Vassport", "city"), ("baker", "occupation"), ("Quill & Oak", "employer")]
    assert ("1,200", "number") in found["numbers"] and ("1962", "number") in found["numbers"]
    assert found["dates"] == [("March 3, 1962", "date"), ("1962", "year")]  # the date's own year is not a second span
    assert ("Mira Tolven", "name") in found["names"] and ("Quill & Oak", "name") in found["names"]
    assert found["titles"] == [("The Long Road", "title")]
    for name in found:
        for a, b, s, _ in get_extractor(name).find(text):
            assert text[a:b] == s


def test_extract_sorts_spans_by_row_and_offset():
    out = extract(["b 12 a 3", "7"], [get_extractor("numbers")])
    assert out["row"].tolist() == [0, 0, 1] and out["char_start"].tolist() == [2, 7, 0]


def test_unknown_extractor_is_refused():
    with pytest.raises(TokenmillError, match="unknown span extractor"):
        get_extractor("places")
