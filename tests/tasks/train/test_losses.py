import math

import pytest
import torch

from tokenmill.tasks.train.losses import (keep_share, keep_top, tdpo_loss, tgdpo_weights, token_kl, token_logprobs, weighted_dpo_loss,
                                          weighted_nll, weighted_sft_loss)


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


def test_rpo_nll_is_the_token_mean_over_the_batch_of_the_chosen_completions():
    # TRL's `sft` loss term: −mean of ℓ over every masked token of the batch (not a mean of sequence means)
    logps = torch.tensor([[0.0, math.log(0.5), math.log(0.25)], [0.0, math.log(0.1), -7.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # position 0 never counts, even where masked in
    assert weighted_nll(logps, mask).item() == pytest.approx((math.log(2) + math.log(4) + math.log(10)) / 3, abs=1e-6)


def test_tgdpo_weights_follow_the_token_rewards_scaled_by_alpha_and_beta():
    # dvlab-research/TGDPO: β·(1 ± α·β·r̂) per token; α 0.5, β 0.1: 1 + 0.05·r̂ on chosen, 1 − 0.05·r̂ on rejected
    wc, wr = tgdpo_weights(torch.tensor([[4.0, -2.0]]), torch.tensor([[6.0, 0.0]]), torch.tensor([[1.0, 1.0]]),
                           torch.tensor([[1.0, 0.0]]), alpha=0.5, beta=0.1)
    assert wc.tolist() == [[pytest.approx(1.2), pytest.approx(0.9)]] and wr.tolist() == [[pytest.approx(0.7), 0.0]]
    # not clipped: a large reward on a rejected token gives a negative weight, as in the authors' loss
    _, neg = tgdpo_weights(torch.zeros(1, 1), torch.tensor([[30.0]]), torch.ones(1, 1), torch.ones(1, 1), 0.5, 0.1)
    assert neg.item() == pytest.approx(-0.5)


def test_token_kl_on_a_two_token_vocabulary():
    # sequence 0 1 0; the distributions at positions 0 and 1 predict tokens 1 and 2
    ref = torch.log(torch.tensor([[[0.5, 0.5], [0.8, 0.2], [0.5, 0.5]]]))
    pol = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]])).requires_grad_()
    ids = torch.tensor([[0, 1, 0]])
    kl = token_kl(pol, ref, ids)
    # KL(ref ‖ pol) = Σ_v ref(v)·ln(ref(v)/pol(v)); position 0 has no context, the last logits predict nothing
    want = [0.0, 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)]
    assert kl.tolist()[0] == pytest.approx(want, abs=1e-6)
    # ∂KL/∂z = softmax(z) − p_ref, and the reference gets no gradient
    kl.sum().backward()
    assert pol.grad[0, :2].tolist() == [[pytest.approx(-0.25), pytest.approx(0.25)], [pytest.approx(-0.3), pytest.approx(0.3)]]
    assert pol.grad[0, 2].tolist() == [0.0, 0.0]
    assert token_kl(ref, ref, ids).abs().max().item() < 1e-6  # the reference against itself
    with pytest.raises(ValueError, match="do not fit"):
        token_kl(pol, ref[:, :2], ids)


def test_tdpo_on_a_hand_worked_case():
    # completion = positions 1, 2; chosen log-ratios (.2, .4), rejected (−.1, .5): u = .6 − .4 = .2
    pc, rc = torch.tensor([[0.0, -1.0, -2.0]]), torch.tensor([[0.0, -1.2, -2.4]])
    pr, rr = torch.tensor([[0.0, -3.1, -1.5]]), torch.tensor([[0.0, -3.0, -2.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    # sequential KL: chosen .1 + .2 = .3, rejected .3 + .4 = .7 (the 5 at position 0 is not completion)
    klc = torch.tensor([[0.0, 0.1, 0.2]], requires_grad=True)
    klr = torch.tensor([[5.0, 0.3, 0.4]], requires_grad=True)
    loss1, m1 = tdpo_loss(pc, rc, pr, rr, klc, klr, mask, mask, beta=0.5, alpha=0.5, variant="tdpo1")
    assert m1.item() == pytest.approx(0.5 * (0.2 - (0.7 - 0.3)), abs=1e-6)  # TDPO1: no α
    assert loss1.item() == pytest.approx(math.log(1 + math.exp(0.1)), abs=1e-6)
    loss2, m2 = tdpo_loss(pc, rc, pr, rr, klc, klr, mask, mask, beta=0.5, alpha=0.5, variant="tdpo2")
    assert m2.item() == pytest.approx(0.5 * (0.2 - 0.5 * (0.7 - 0.3)), abs=1e-6) and loss2.item() == pytest.approx(math.log(2))
    loss2.backward()
    # TDPO2 stops the gradient through the chosen KL; ∂L/∂D^r = σ(−m)·β·α = .5 · .5 · .5
    assert klc.grad is None
    assert klr.grad.tolist() == [[0.0, pytest.approx(0.125), pytest.approx(0.125)]]
    loss1.backward()
    assert klc.grad.tolist()[0][1] < 0  # TDPO1: more chosen KL raises the margin, lowers the loss
    with pytest.raises(ValueError, match="unknown variant"):
        tdpo_loss(pc, rc, pr, rr, klc, klr, mask, mask, variant="tdpo3")


@pytest.mark.parametrize("variant", ["tdpo1", "tdpo2"])
def test_tdpo_without_kl_is_dpo(variant):
    torch.manual_seed(0)
    pc, rc, pr, rr = (torch.randn(3, 5) for _ in range(4))
    mc, mr = (torch.tensor([[0.0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]) for _ in range(2))
    zero = torch.zeros(3, 5)
    loss, margin = tdpo_loss(pc, rc, pr, rr, zero, zero, mc, mr, beta=0.3, alpha=0.7, variant=variant)
    dpo_loss, dpo_margin = weighted_dpo_loss(pc, rc, pr, rr, mc, mr, beta=0.3)
    assert torch.allclose(margin, dpo_margin) and loss.item() == pytest.approx(dpo_loss.item(), abs=1e-6)


def test_dynamic_keep_schedule_relaxes_linearly_and_keeps_the_top_weights():
    assert [keep_share(s, 5, 0.2, 1.0) for s in range(1, 6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert keep_share(1, 1, 0.2, 1.0) == 0.2  # one step: the start share
    w = torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.0], [0.0, 0.3, 0.5, 0.0, 0.7]])  # 6 positive weights
    # share 0.5 → 3 tokens: 0.9, 0.7 and the first 0.5 (ties: the lower flat index)
    assert keep_top(w, 0.5).tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]]
    assert keep_top(w, 1.0).tolist() == (w > 0).float().tolist()  # never a zero weight, even at share 1
    assert keep_top(w, 0.1).sum() == 1
