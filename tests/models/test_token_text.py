"""Token ids → text and character offsets (`TokenText`), on a small tokenizer trained here.

The reference is the tokenizer's own `decode`; offsets must tile the text exactly
(each token's slice, concatenated, is the text), also across non-ASCII characters
split over several byte-level tokens and over byte sequences that are not UTF-8.
"""

from __future__ import annotations

import numpy as np
import pytest

from tokenmill.models.tokenizer import BOS, EOS, PAD, TokenText, token_bytes_table, train_tokenizer

CORPUS = [
    "Compute step by step: start with 7, add 5, times 3, minus 4.\n7+5=12\n12*3=36\n36-4=32\nAnswer: 32",
    "Write a Python function g(x) that adds 13 to x.\ndef g(x):\n    x = x + 13\n    return x\n",
    "Mira Tolven was born in 1962 in Vassport. Mira works as a baker at Quill & Oak.",
    "café crème, 中文字符, emoji 🎉🚀 and more text 1234567890",
] * 25

TEXTS = [
    "Answer: 32",
    "hello world, the function returns x + 13\n",
    "café crème brûlée",
    "中文 text 字符",
    "emoji 🎉 and 🚀👩‍💻!",
    "  leading spaces\n\n\ttabs\r\n",
    "1962 + 12345 = 14307",
    "",
]


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(CORPUS, vocab_size=300), bos_token=BOS, eos_token=EOS, pad_token=PAD
    )


@pytest.fixture(scope="module")
def tt(tok) -> TokenText:
    return TokenText(tok)


def ids_of(tok, text: str, special: bool = False) -> list[int]:
    return tok(text, add_special_tokens=special)["input_ids"]


def assert_tiles(text: str, starts: np.ndarray, ends: np.ndarray) -> None:
    """Offsets are monotone, within the text, contiguous, and cover it exactly."""
    n = len(starts)
    assert len(ends) == n
    if n == 0:
        assert text == ""
        return
    assert (starts >= 0).all() and (ends <= len(text)).all()
    assert (ends >= starts).all()
    assert (np.diff(starts) >= 0).all() and (np.diff(ends) >= 0).all()
    assert starts[0] == 0 and ends[-1] == len(text)
    assert (starts[1:] == ends[:-1]).all()
    assert "".join(text[s:e] for s, e in zip(starts.tolist(), ends.tolist())) == text


def test_trained_tokenizer_shape(tok):
    assert len(tok) == 300
    assert tok.bos_token_id is not None and tok.eos_token_id is not None and tok.pad_token_id is not None
    # prompts start with BOS, as every engine expects
    assert ids_of(tok, "hi", special=True)[0] == tok.bos_token_id


def test_token_bytes_table(tok):
    table = token_bytes_table(tok)
    assert len(table) >= len(tok)
    for sid in tok.all_special_ids:
        assert table[sid] == b""
    # the byte-level alphabet: every single byte has a token of its own
    singles = {b for b in table if len(b) == 1}
    assert len(singles) == 256
    # each token's bytes are what the tokenizer decodes it to (where that is valid UTF-8)
    for idx, b in enumerate(table):
        if b and idx not in tok.all_special_ids:
            try:
                expected = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert tok.decode([idx]) == expected


def test_digits_are_single_tokens(tok):
    ids = ids_of(tok, "1962 + 12345 = 14307 and 0000")
    pieces = tok.convert_ids_to_tokens(ids)
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert "".join(digit_pieces) == "19621234514307" + "0000"
    assert all(len(p) == 1 for p in digit_pieces)
    # not just in this text: no token of the vocabulary holds a digit and anything else
    assert all(len(t) == 1 for t in tok.get_vocab() if any(c.isdigit() for c in t))


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_tokenizer_and_offsets_tile(tok, tt, text):
    ids = ids_of(tok, text)
    decoded, starts, ends = tt.decode(np.array(ids, dtype=np.int64))
    assert decoded == tok.decode(ids, skip_special_tokens=True) == text
    assert_tiles(decoded, starts, ends)
    assert starts.dtype == np.int32 and ends.dtype == np.int32


def test_multibyte_characters_belong_to_the_token_with_their_first_byte(tok, tt):
    ids = ids_of(tok, "a中b")
    # 中 is 3 bytes; with this vocabulary it is split over more than one token
    assert len(ids) >= 4
    text, starts, ends = tt.decode(np.array(ids))
    assert text == "a中b"
    spans = [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
    assert spans[0] == "a" and spans[-1] == "b"
    middle = spans[1:-1]
    assert middle[0] == "中" and all(s == "" for s in middle[1:])


def test_special_tokens_get_empty_spans(tok, tt):
    text = "café 🎉 done"
    ids = [tok.bos_token_id] + ids_of(tok, text) + [tok.eos_token_id]
    decoded, starts, ends = tt.decode(np.array(ids))
    assert decoded == text == tok.decode(ids, skip_special_tokens=True)
    assert (starts[0], ends[0]) == (0, 0)  # BOS at the start
    assert (starts[-1], ends[-1]) == (len(text), len(text))  # EOS at the end
    assert_tiles(decoded, starts, ends)


def test_only_eos(tok, tt):
    text, starts, ends = tt.decode(np.array([tok.eos_token_id]))
    assert text == "" and starts.tolist() == [0] and ends.tolist() == [0]


def _invalid_sequences(tok) -> list[list[int]]:
    table = token_bytes_table(tok)
    cont = table.index(b"\xa9")  # a lone UTF-8 continuation byte
    lead = table.index(b"\xe4")  # the lead byte of a 3-byte character
    zh = ids_of(tok, "中")
    ab = ids_of(tok, "ab")
    assert b"".join(table[i] for i in zh) == "中".encode()
    cut = []  # 中 cut after its first two bytes, as a generation that hit max_tokens may be
    for i in zh:
        cut.append(i)
        if len(b"".join(table[j] for j in cut)) >= 2:
            break
    assert len(b"".join(table[j] for j in cut)) == 2
    return [
        [cont],
        ab + [cont] + ab,
        ab + cut,
        ab + [lead],
        [lead] + ab + cut + ab,
        [cont, cont, lead] + ab + [tok.eos_token_id],
        ids_of(tok, "é") + [cont] + ids_of(tok, "🎉")[:2] + ab,
    ]


def test_invalid_utf8_still_gives_offsets_within_the_text(tok, tt):
    for ids in _invalid_sequences(tok):
        text, starts, ends = tt.decode(np.array(ids))
        raw = b"".join(token_bytes_table(tok)[i] for i in ids)
        assert text == raw.decode("utf-8", errors="replace")
        assert "\ufffd" in text
        assert text == tok.decode(ids, skip_special_tokens=True)
        assert_tiles(text, starts, ends)


def test_decode_many_equals_decode_of_each(tok, tt):
    seqs = [ids_of(tok, t) for t in TEXTS] + _invalid_sequences(tok) + [[], [tok.eos_token_id]]
    rng = np.random.default_rng(0)
    seqs += [rng.integers(0, len(tok), size=int(n)).tolist() for n in rng.integers(0, 40, size=20)]  # byte soup
    order = rng.permutation(len(seqs))
    seqs = [seqs[i] for i in order]
    texts, starts, ends = tt.decode_many([np.array(s, dtype=np.int64) for s in seqs])
    assert len(texts) == len(seqs)
    assert len(starts) == len(ends) == sum(len(s) for s in seqs)
    at = 0
    for seq, text in zip(seqs, texts):
        one_text, one_starts, one_ends = tt.decode(np.array(seq, dtype=np.int64))
        assert text == one_text == tok.decode(seq, skip_special_tokens=True)
        sl = slice(at, at + len(seq))
        # offsets restart at 0 in every sequence
        assert starts[sl].tolist() == one_starts.tolist()
        assert ends[sl].tolist() == one_ends.tolist()
        assert_tiles(text, starts[sl], ends[sl])
        at += len(seq)


def test_decode_many_of_nothing(tt):
    texts, starts, ends = tt.decode_many([])
    assert texts == [] and len(starts) == 0 and len(ends) == 0
