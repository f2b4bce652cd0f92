"""The bundled byte-level BPE tokenizer, and the per-token byte table used for offsets.

Digits are split one per token (arithmetic is learnable that way at this size);
everything else is GPT-2 style byte-level BPE, so any UTF-8 text round-trips.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIALS = [PAD, BOS, EOS]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    # Prompts start with BOS for every engine alike (vLLM and transformers both add it).
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos)])
    return tok


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte ↔ printable-unicode table, inverted (char → byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes_table(hf_tokenizer) -> list[bytes]:
    """The exact bytes each token id contributes to decoded text (b"" for special tokens).

    Byte-level BPE (GPT-2/Llama-3 style) maps each token string back through the byte
    table; SentencePiece style maps `▁` to a space and `<0xNN>` to its byte; anything
    else falls back to decoding the token alone.
    """
    vocab = hf_tokenizer.get_vocab()
    size = max(len(hf_tokenizer), max(vocab.values()) + 1)
    special = set(hf_tokenizer.all_special_ids)
    inv = _bytes_to_unicode()
    table: list[bytes] = [b""] * size
    for token, idx in vocab.items():
        if idx in special:
            continue
        if all(ch in inv for ch in token):
            table[idx] = bytes(inv[ch] for ch in token)
        elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:
            table[idx] = bytes([int(token[3:5], 16)])
        elif "▁" in token:
            table[idx] = token.replace("▁", " ").encode("utf-8")
        else:
            table[idx] = hf_tokenizer.decode([idx]).encode("utf-8")
    return table


class TokenText:
    """Vectorised token ids → (text, character offsets) for one tokenizer.

    text = UTF-8 decode (errors replaced) of the concatenated token bytes; token t spans
    characters [char_start[t], char_end[t]) of that text. A character split across
    tokens belongs to the token holding its first byte (the others get empty spans).
    """

    def __init__(self, hf_tokenizer):
        table = token_bytes_table(hf_tokenizer)
        self.lengths = np.array([len(b) for b in table], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.blob = np.frombuffer(b"".join(table), dtype=np.uint8)

    def decode_many(self, sequences: list[np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Texts of all sequences, and flat char_start/char_end of all their tokens."""
        seq_lens = np.array([len(s) for s in sequences], dtype=np.int64)
        ids = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, np.int64)
        tok_len = self.lengths[ids]
        # ragged gather of every token's bytes into one buffer
        tok_end = np.cumsum(tok_len)
        tok_start = tok_end - tok_len
        gather = np.repeat(self.offsets[ids] - tok_start, tok_len) + np.arange(int(tok_end[-1]) if len(ids) else 0)
        buf = self.blob[gather]
        # byte range of each sequence inside `buf`
        seq_tok_end = np.cumsum(seq_lens)
        seq_byte_end = np.concatenate([[0], tok_end])[seq_tok_end]
        seq_byte_start = np.concatenate([[0], seq_byte_end[:-1]])
        raw = buf.tobytes()
        texts = [raw[a:b].decode("utf-8", errors="replace") for a, b in zip(seq_byte_start.tolist(), seq_byte_end.tolist())]
        # characters before each byte, counted from the start of that byte's sequence
        is_start = (buf & 0xC0) != 0x80
        chars_before = np.concatenate([[0], np.cumsum(is_start)])
        seq_of_tok = np.repeat(np.arange(len(sequences)), seq_lens)
        base = chars_before[seq_byte_start][seq_of_tok]
        starts = (chars_before[tok_start] - base).astype(np.int32)
        ends = (chars_before[tok_end] - base).astype(np.int32)
        n_chars = chars_before[seq_byte_end] - chars_before[seq_byte_start]
        bad = [i for i, t in enumerate(texts) if len(t) != n_chars[i]]
        for i in bad:  # invalid UTF-8 (replacement chars): exact but slower path, rare
            sl = slice(int(seq_tok_end[i] - seq_lens[i]), int(seq_tok_end[i]))
            a = int(seq_byte_start[i])
            starts[sl], ends[sl] = self._slow_offsets(raw[a : int(seq_byte_end[i])], tok_start[sl] - a, tok_end[sl] - a)
        return texts, starts, ends

    def decode(self, token_ids) -> tuple[str, np.ndarray, np.ndarray]:
        texts, starts, ends = self.decode_many([np.asarray(token_ids)])
        return texts[0], starts, ends

    @staticmethod
    def _slow_offsets(raw: bytes, byte_start: np.ndarray, byte_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache: dict[int, int] = {}

        def chars(b: int) -> int:
            if b not in cache:
                cache[b] = len(raw[:b].decode("utf-8", errors="replace"))
            return cache[b]

        starts = np.array([chars(int(b)) for b in byte_start], dtype=np.int32)
        ends = np.array([chars(int(b)) for b in byte_end], dtype=np.int32)
        return starts, np.maximum(ends, starts)
