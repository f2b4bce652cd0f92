import numpy as np
import pytest

from tokenmill.labelers.hallucination.uncertainty import CONTRADICT, ENTAIL, NEUTRAL, ccp_word, consistency, segment_stats


def test_ccp_on_a_hand_worked_case():
    # chosen " Paris" p=.5; alternatives " paris" .2 (same after normalising), " London" .2, " Rome" .1
    # CCP_word = (.5 + .2) / (.5 + .2 + .2 + .1) = 0.7
    chosen = np.array([10])
    top_ids = np.array([[10, 11, 12, 13]])
    top_lp = np.log(np.array([[0.5, 0.2, 0.2, 0.1]]))
    rel = np.array([[ENTAIL, ENTAIL, CONTRADICT, CONTRADICT]])
    assert ccp_word(chosen, np.log([0.5]), top_ids, top_lp, rel) == pytest.approx([0.7])
    # a judge that calls "Rome" neutral leaves it out: .7 / .9
    rel_n = np.array([[ENTAIL, ENTAIL, CONTRADICT, NEUTRAL]])
    assert ccp_word(chosen, np.log([0.5]), top_ids, top_lp, rel_n) == pytest.approx([0.7 / 0.9])


def test_ccp_counts_a_chosen_token_outside_the_top_k_once():
    # sampled token 99 (p = .1) not among the top-2 (.6, .3, both contradicting): .1 / (.6 + .3 + .1)
    out = ccp_word(np.array([99]), np.log([0.1]), np.array([[1, 2]]), np.log(np.array([[0.6, 0.3]])),
                   np.array([[CONTRADICT, CONTRADICT]]))
    assert out == pytest.approx([0.1])


def test_claim_ccp_is_the_product_over_the_span():
    word = np.array([0.7, 0.5, 1.0, 0.9])
    _, _, log_sum = segment_stats(np.log(word), np.array([0, 1]), np.array([2, 3]))
    assert np.exp(log_sum) == pytest.approx([0.35, 0.45])


def test_segment_stats_handle_overlap_and_the_last_token():
    v = np.array([0.9, 0.2, 0.6, 0.4])
    mins, means, sums = segment_stats(v, np.array([0, 1, 3, 2]), np.array([1, 3, 3, 1]))
    assert mins[:3] == pytest.approx([0.2, 0.2, 0.4]) and means[:3] == pytest.approx([0.55, 0.4, 0.4])
    assert np.isnan(mins[3]) and np.isnan(means[3])  # an empty segment


def test_consistency_counts_other_samples_stating_the_same_value():
    # prompt p: 3 samples; r1 and r2 say city "Vassport" (r2 as "vassport "), r3 says "Kestrin"; prompt q has one sample
    rollout = np.array(["r1", "r2", "r3", "r1", "q1"], dtype=object)
    group = np.array(["p", "p", "p", "p", "q"], dtype=object)
    kind = np.array(["city", "city", "city", "birth_year", "city"], dtype=object)
    text = np.array(["Vassport", "vassport ", "Kestrin", "1962", "Pennick"], dtype=object)
    out = consistency(rollout, group, kind, text, {"p": 3, "q": 1})
    assert out[:4] == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert np.isnan(out[4])


def test_a_missing_value_nulls_only_the_segments_that_hold_it():
    v = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    mins, means, sums = segment_stats(v, np.array([0, 2, 1]), np.array([0, 4, 2]))
    np.testing.assert_allclose(means[:2], [1.0, 4.0]) and np.testing.assert_allclose(mins[:2], [1.0, 3.0])
    assert np.isnan(means[2]) and np.isnan(sums[2]) and np.isnan(mins[2])
