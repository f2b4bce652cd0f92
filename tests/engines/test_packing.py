"""Packed scoring batches: positions restart per sequence, the mask keeps sequences apart, and
a packed sequence scores as it does alone."""

import numpy as np
import torch

from tokenmill.datasets import block_causal_mask
from tokenmill.engines.packing import pack_order, packed_batch


def test_sequences_fill_rows_in_order_and_a_long_one_gets_its_own():
    assert pack_order([3, 4, 2, 5, 9, 1], pack_len=8) == [[0, 1], [2, 3], [4], [5]]
    assert pack_order([], pack_len=8) == []


def test_positions_restart_and_segments_number_the_sequences_of_a_row():
    ids, pos, seg, row, off = packed_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13]], pad_id=0, pack_len=5)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 0]]
    assert pos.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert seg.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, -1]]
    assert row.tolist() == [0, 0, 1] and off.tolist() == [0, 3, 0]


def test_the_mask_is_causal_within_a_sequence_and_empty_across_and_on_padding():
    _, _, seg, _, _ = packed_batch([[1, 2, 3], [4, 5]], pad_id=0, pack_len=6)
    seg = torch.cat([seg, torch.tensor([[-1]])], 1)  # one padding column
    m = block_causal_mask(seg)[0, 0]
    want = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(m, want)


def test_packed_scoring_equals_padded_scoring():
    from tokenmill.engines.hf import HFEngine
    from tokenmill.sources.worlds import get_world

    padded, packed = HFEngine("tiny-small"), HFEngine("tiny-small", pack=True)
    tok = padded.tokenizer
    prompts = [tok(p.prompt)["input_ids"] for p in get_world("arithmetic").prompts(9)]  # distinct: the joint pass
    g = torch.Generator().manual_seed(1)
    comps = [torch.randint(3, 1000, (int(n),), generator=g).tolist() for n in torch.randint(0, 60, (9,), generator=g)]
    a = padded.score(prompts, comps, top_k=3, hidden_layer=1)
    b = packed.score(prompts, comps, top_k=3, hidden_layer=1)
    for x, y in zip(a, b):
        assert len(y.logprobs) == len(x.logprobs)
        np.testing.assert_allclose(y.logprobs, x.logprobs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y.entropy, x.entropy, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y.hidden, x.hidden, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y.topk_ids, x.topk_ids)
