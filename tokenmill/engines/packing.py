"""Packed, unpadded scoring batches: several sequences in one row, kept apart by the mask.

A padded batch of sequences with lengths T_i runs n · max T_i tokens; packed, the sequences
are laid end to end in rows of at most `pack_len` tokens (in the order given, a new row when
the next one does not fit), so a batch runs Σ T_i tokens plus the padding of its last
columns. Each token gets

  position  its position in its own sequence (0 at the sequence's first token), so rotary
            embeddings see each sequence as if alone;
  segment   the sequence's index within its row (−1 on padding);

and the attention mask is block-causal: token q attends to token k iff both are in the same
segment and k ≤ q (`datasets.block_causal_mask`, the one the packed trainer uses). Under that
mask a packed sequence computes exactly what it computes alone, up to float rounding
(tests/engines/test_packing.py). The mask is dense [rows, 1, L, L] here, which sdpa runs at
L² cost per row: on CPU packs are kept short (`PACK_LEN`); flash-attention's varlen kernels
or a FlexAttention block mask run only the blocks on the diagonal (issue 24's GPU part).
"""

from __future__ import annotations

from typing import Sequence

import torch

PACK_LEN = 1024  # most tokens per packed row (a longer sequence gets a row of its own)


def pack_order(lengths: Sequence[int], pack_len: int = PACK_LEN) -> list[list[int]]:
    """Rows of sequence indices, in the order given: a sequence goes into the current row when
    it fits in `pack_len` tokens, else it starts a new one."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if not rows or (used + n > pack_len and rows[-1]):
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def packed_batch(seqs: Sequence[Sequence[int]], pad_id: int, pack_len: int = PACK_LEN):
    """(input_ids [R, L], position_ids [R, L], segment_ids [R, L], row [N], offset [N]): the
    sequences packed (`pack_order`), each one's row and the column its first token sits in."""
    rows = pack_order([len(s) for s in seqs], pack_len)
    width = max((sum(len(seqs[i]) for i in r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    row_of = torch.empty(len(seqs), dtype=torch.long)
    offset = torch.empty(len(seqs), dtype=torch.long)
    for r, members in enumerate(rows):  # per sequence, not per token
        col = 0
        for k, i in enumerate(members):
            n = len(seqs[i])
            ids[r, col : col + n] = torch.as_tensor(list(seqs[i]), dtype=torch.long)
            pos[r, col : col + n] = torch.arange(n)
            seg[r, col : col + n] = k
            row_of[i], offset[i] = r, col
            col += n
    return ids, pos, seg, row_of, offset

