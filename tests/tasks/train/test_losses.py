import math

import pytest
import torch

from tokenmill.tasks.train.losses import tgdpo_weights, token_logprobs, weighted_dpo_loss, weighted_sft_loss


def _logits_for(probs_per_step):
    """Logits whose softmax over a 3-token vocabulary is the given distribution at each step."""
    return torch.log(torch.tensor([probs_per_step], dtype=torch.float32))


def test_weighted_sft_on_a_hand_worked_case():
    # sequence 0 1 2; step 0 predicts token 1 with p = .5, step 1 predicts token 2 with p = .25
    logits = _logits_for([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    ids = torch.tensor([[0, 1, 2]])
    lp = token_logprobs(logits, ids)
    assert lp.tolist()[0] == pytest.approx([0.0, math.log(0.5), math.log(0.25)], abs=1e-6)
    # weight 1 on token 1, 3 on token 2: (1·ln2 + 3·ln4) / 4
    loss = weighted_sft_loss(logits, ids, torch.tensor([[0.0, 1.0, 3.0]]))
    assert loss.item() == pytest.approx((math.log(2) + 3 * math.log(4)) / 4, abs=1e-6)
    # a weight on position 0 is ignored: nothing predicts the first token
    assert weighted_sft_loss(logits, ids, torch.tensor([[5.0, 1.0, 3.0]])).item() == pytest.approx(loss.item())


def test_weighted_dpo_on_a_hand_worked_case():
    # chosen log-ratios (.2, .4), rejected (−.1, .5); cDPO weights on rejected (1, .5); β = .5
    pc, rc = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.2, -2.4]])
    pr, rr = torch.tensor([[-3.1, -1.5]]), torch.tensor([[-3.0, -2.0]])
    loss, margin = weighted_dpo_loss(pc, rc, pr, rr, torch.ones(1, 2), torch.tensor([[1.0, 0.5]]), beta=0.5)
    want = 0.5 * ((0.2 + 0.4) - (-0.1 + 0.5 * 0.5))
    assert margin.item() == pytest.approx(want, abs=1e-6)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-want))), abs=1e-6)
    # all-ones weights are plain DPO
    _, plain = weighted_dpo_loss(pc, rc, pr, rr, torch.ones(1, 2), torch.ones(1, 2), beta=0.5)
    assert plain.item() == pytest.approx(0.5 * (0.6 - 0.4), abs=1e-6)


def test_tgdpo_weights_follow_the_token_rewards():
    wc, wr = tgdpo_weights(torch.tensor([[0.4, -0.2]]), torch.tensor([[0.6, 0.0]]), torch.tensor([[1.0, 1.0]]),
                           torch.tensor([[1.0, 0.0]]), alpha=0.5)
    assert wc.tolist() == [[pytest.approx(1.2), pytest.approx(0.9)]] and wr.tolist() == [[pytest.approx(0.7), 0.0]]
