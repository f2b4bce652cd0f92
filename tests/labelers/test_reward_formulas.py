import math

import numpy as np
import pytest

from tokenmill.labelers.rewards.reward_math import (
    broadcast,
    d3s_scores,
    dpo_token_rewards,
    group_advantages,
    rlpr_rewards,
    tempo_advantages,
    window_entropy,
)


def _flat(rows):
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    tokens = np.array([t for r in rows for t in r], dtype=np.int64)
    return tokens, lengths


# --- DPO token reward -------------------------------------------------------------


def test_dpo_token_reward_is_beta_times_logratio():
    # 0.5 * (-1 - -1.5) = 0.25 ; 0.5 * (-2 - -1) = -0.5
    r = dpo_token_rewards(np.array([-1.0, -2.0]), np.array([-1.5, -1.0]), beta=0.5)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, [0.25, -0.5])


def test_dpo_token_reward_clips_symmetrically():
    # 0.25 is inside [-0.3, 0.3]; -0.5 is clipped to -0.3
    r = dpo_token_rewards(np.array([-1.0, -2.0]), np.array([-1.5, -1.0]), beta=0.5, clip=0.3)
    np.testing.assert_allclose(r, [0.25, -0.3])


# --- GRPO ---------------------------------------------------------------------------


def test_group_advantages_normalise_by_the_unbiased_group_std():
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    groups = np.array(["a", "a", "a", "a", "b", "b"])
    # group a: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 (torch.std, as verl and TRL)
    #   -> ±0.5 / 0.57735 = ±0.86603; group b: both rewards equal the mean -> 0
    adv = group_advantages(rewards, groups, eps=1e-6)
    assert adv.dtype == np.float32
    s = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    np.testing.assert_allclose(adv, [s, -s, -s, s, 0.0, 0.0], rtol=1e-6)
    # the population std (tokenmill's earlier default) is 0.5: ±1, √(4/3) = 1.155× larger
    pop = group_advantages(rewards, groups, eps=1e-6, std="population")
    np.testing.assert_allclose(pop, [1, -1, -1, 1, 0, 0], rtol=1e-5)


def test_group_advantages_match_verls_formula_on_random_groups():
    # verl's compute_grpo_outcome_advantage: (score − mean) / (torch.std(scores) + 1e-6) per group
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    rewards, groups = rng.random(40), rng.integers(0, 6, 40)
    expected = np.empty(40)
    for g in np.unique(groups):
        m = groups == g
        t = torch.tensor(rewards[m])
        expected[m] = ((t - t.mean()) / (t.std() + 1e-6)).numpy() if m.sum() > 1 else 0.0
    np.testing.assert_allclose(group_advantages(rewards, groups), expected, rtol=1e-5, atol=1e-6)


def test_a_group_of_one_gets_advantage_zero():
    assert group_advantages(np.array([1.0, 0.0, 1.0]), np.array([0, 1, 1]))[0] == 0.0


def test_group_advantages_without_normalisation_subtract_the_mean():
    # Dr. GRPO: R - mean; group 7 mean 2, group 3 mean 5
    adv = group_advantages(np.array([1.0, 5.0, 3.0]), np.array([7, 3, 7]), normalize=False)
    np.testing.assert_allclose(adv, [-1.0, 0.0, 1.0])


def test_group_of_one_gets_zero_advantage():
    assert group_advantages(np.array([3.0]), np.array([0]))[0] == 0.0


def test_broadcast_repeats_over_tokens_and_skips_empty_rollouts():
    np.testing.assert_array_equal(broadcast(np.array([1.0, 2.0, 3.0]), np.array([2, 0, 1])), [1, 1, 3])


# --- TEMPO --------------------------------------------------------------------------

# r0=[5,6,7] R=1, r1=[5,6,8] R=0, r2=[5,9] R=0, r3=[5,6,7] R=1; one group: mu=0.5, sigma=0.5.
# j=0: A = B = all four, V=0.5 -> TD 0 -> (R-0.5)/0.5 = [1, -1, -1, 1]
# j=1: A = all four (V=0.5); token 6 -> B={r0,r1,r3}, V=2/3, TD=+1/6; token 9 -> B={r2}, V=0, TD=-1/2
#      r0,r3: (0.5+1/6)/0.5 = 4/3 ; r1: (-0.5+1/6)/0.5 = -2/3 ; r2: (-0.5-0.5)/0.5 = -2
# j=2: A = {r0,r1,r3} (V=2/3); token 7 -> B={r0,r3}, V=1, TD=+1/3; token 8 -> B={r1}, V=0, TD=-2/3
#      r0,r3: (0.5+1/3)/0.5 = 5/3 ; r1: (-0.5-2/3)/0.5 = -7/3
TEMPO_ROWS = [[5, 6, 7], [5, 6, 8], [5, 9], [5, 6, 7]]
TEMPO_R = np.array([1.0, 0.0, 0.0, 1.0])


def test_tempo_matches_hand_worked_tree():
    tokens, lengths = _flat(TEMPO_ROWS)
    # worked with the population σ = 0.5 of R = [1, 0, 0, 1]
    adv = tempo_advantages(tokens, lengths, TEMPO_R, np.zeros(4, int), eps=0.0, std="population")
    assert adv.dtype == np.float32
    expected = np.array([1, 4 / 3, 5 / 3,  -1, -2 / 3, -7 / 3,  -1, -2,  1, 4 / 3, 5 / 3])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    # the default divides by the unbiased σ = √(1/3) instead: every value × 0.5 / √(1/3)
    default = tempo_advantages(tokens, lengths, TEMPO_R, np.zeros(4, int), eps=0.0)
    np.testing.assert_allclose(default, expected * 0.5 / math.sqrt(1 / 3), rtol=1e-6)


def test_tempo_without_normalisation_keeps_raw_scale():
    # same tree, no division by sigma: R - 0.5 + TD
    tokens, lengths = _flat(TEMPO_ROWS)
    adv = tempo_advantages(tokens, lengths, TEMPO_R, np.zeros(4, int), normalize=False)
    expected = [0.5, 2 / 3, 5 / 6,  -0.5, -1 / 3, -7 / 6,  -0.5, -1.0,  0.5, 2 / 3, 5 / 6]
    np.testing.assert_allclose(adv, expected, rtol=1e-6)


def test_tempo_equals_grpo_at_non_branching_tokens():
    # all three share [1,2,3] and continue past it, so B = A at j=0,1,2
    rows = [[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 3]]
    rewards = np.array([1.0, 0.0, 1.0])
    tokens, lengths = _flat(rows)
    adv = tempo_advantages(tokens, lengths, rewards, np.zeros(3, int))
    grpo = broadcast(group_advantages(rewards, np.zeros(3, int)), lengths)
    shared = np.array([j < 3 for r in rows for j in range(len(r))])
    np.testing.assert_allclose(adv[shared], grpo[shared], rtol=1e-6)
    assert not np.allclose(adv[~shared], grpo[~shared])  # the branch at j=3 does move them


def test_tempo_keeps_groups_apart_and_follows_input_order():
    # input order a0, b0, a1, b1; identical token prefixes across groups must not mix.
    # group a: a0=[5,6,7] R=1, a1=[5,6,8] R=0 (mu .5, sigma .5)
    #   j=0,1: B = A -> ±1 ; j=2: A={a0,a1} V=.5, B={a0} V=1 -> (.5+.5)/.5 = 2, a1 -> -2
    # group b: b0=[5,6,7] R=0, b1=[5,9] R=1 (mu .5, sigma .5)
    #   j=0: -1 / 1 ; j=1: A={b0,b1} V=.5; b0: B V=0 -> (-.5-.5)/.5 = -2; b1: B V=1 -> 2
    #   j=2: only b0 continues, B = A -> -1
    rows = [[5, 6, 7], [5, 6, 7], [5, 6, 8], [5, 9]]
    tokens, lengths = _flat(rows)
    adv = tempo_advantages(tokens, lengths, np.array([1.0, 0.0, 0.0, 1.0]),
                           np.array(["a", "b", "a", "b"]), eps=0.0, std="population")
    np.testing.assert_allclose(adv, [1, 1, 2,  -1, -2, -1,  -1, -1, -2,  1, 2], rtol=1e-6)


def test_tempo_zero_length_rollout_counts_in_group_stats_only():
    # r0=[3,4] R=1, r1=[] R=0, r2=[3,5] R=0, r3=[] R=1: mu .5, sigma .5 over all four
    # j=0: A = B = {r0,r2}, V=.5 -> r0: 1, r2: -1
    # j=1: A={r0,r2} V=.5; r0: B V=1 -> (.5+.5)/.5 = 2; r2: B V=0 -> (-.5-.5)/.5 = -2
    tokens, lengths = _flat([[3, 4], [], [3, 5], []])
    adv = tempo_advantages(tokens, lengths, np.array([1.0, 0.0, 0.0, 1.0]), np.zeros(4, int), eps=0.0,
                           std="population")
    np.testing.assert_allclose(adv, [1, 2, -1, -2], rtol=1e-6)


def test_tempo_handles_an_all_empty_batch():
    adv = tempo_advantages(np.zeros(0, int), np.array([0, 0]), np.array([1.0, 0.0]), np.array([0, 0]))
    assert adv.shape == (0,) and adv.dtype == np.float32


def _tempo_slow(rows, rewards, groups, eps, normalize):
    out = []
    for i, row in enumerate(rows):
        members = [m for m in range(len(rows)) if groups[m] == groups[i]]
        rs = np.array([rewards[m] for m in members])
        mu, sigma = rs.mean(), (rs.std(ddof=1) if len(rs) > 1 else 0.0)
        for j in range(len(row)):
            a = [m for m in members if len(rows[m]) > j and rows[m][:j] == row[:j]]
            b = [m for m in a if rows[m][j] == row[j]]
            td = np.mean([rewards[m] for m in b]) - np.mean([rewards[m] for m in a])
            val = rewards[i] - mu + td
            out.append(val / (sigma + eps) if normalize else val)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tempo_agrees_with_slow_reference_on_random_groups(seed):
    rng = np.random.default_rng(seed)
    n = 30
    rows = [list(rng.integers(0, 3, size=rng.integers(0, 7))) for _ in range(n)]
    rewards = rng.random(n)
    groups = rng.integers(0, 4, size=n)
    tokens, lengths = _flat(rows)
    for normalize in (True, False):
        fast = tempo_advantages(tokens, lengths, rewards, groups, normalize=normalize)
        slow = _tempo_slow(rows, rewards, groups, 1e-6, normalize)
        np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=1e-5)


# --- D3S ----------------------------------------------------------------------------


def test_d3s_keeps_top_scores_with_ties_to_lower_index():
    adv = np.array([1.0, -2.0, 0.5, -1.0, 3.0])
    ent = np.array([2.0, 1.0, 4.0, 0.5, 0.0])
    # |A|*H = [2, 2, 2, 0.5, 0]
    score, keep = d3s_scores(adv, ent, keep_frac=0.4)  # ceil(0.4*5) = 2 -> first two of the tie
    assert score.dtype == np.float32 and keep.dtype == bool
    np.testing.assert_allclose(score, [2.0, 2.0, 2.0, 0.5, 0.0])
    np.testing.assert_array_equal(keep, [True, True, False, False, False])
    _, keep = d3s_scores(adv, ent, keep_frac=0.5)  # ceil(2.5) = 3
    np.testing.assert_array_equal(keep, [True, True, True, False, False])
    _, keep = d3s_scores(adv, ent, keep_frac=1.0)
    np.testing.assert_array_equal(keep, [True, True, True, True, False])  # the zero score is never kept


def test_d3s_does_not_fill_its_quota_with_zero_scores():
    # a group whose rollouts all share one reward has A = 0: none of its tokens is kept
    _, keep = d3s_scores(np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 2.0, 3.0, 0.5]), keep_frac=0.5)
    np.testing.assert_array_equal(keep, [False, False, False, True])


def test_d3s_count_is_not_inflated_by_float_noise():
    # 0.1 * 30 = 3.0000000000000004 in floating point; still 3 tokens
    _, keep = d3s_scores(np.ones(30), np.arange(30.0), keep_frac=0.1)
    assert keep.sum() == 3 and keep[-3:].all()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_d3s_rejects_keep_frac_outside_unit_interval(bad):
    with pytest.raises(ValueError):
        d3s_scores(np.ones(3), np.ones(3), keep_frac=bad)


# --- windowed entropy ---------------------------------------------------------------


def test_window_entropy_stays_inside_each_rollout():
    h = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    # window 2: r0 -> 1, (1+2)/2=1.5, (2+3)/2=2.5 ; r1 starts fresh -> 4, (4+6)/2=5
    # the empty middle rollout changes nothing
    m, flag, tau = window_entropy(h, np.array([3, 0, 2]), window=2, threshold=2.5)
    assert m.dtype == np.float32 and flag.dtype == bool
    np.testing.assert_allclose(m, [1.0, 1.5, 2.5, 4.0, 5.0])
    np.testing.assert_array_equal(flag, [False, False, True, True, True])
    assert tau == 2.5


def test_window_entropy_default_threshold_is_the_batch_quantile():
    h = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    # m sorted = [1, 1.5, 2.5, 4, 5]; 0.8 quantile at position 0.8*4 = 3.2 -> 4 + 0.2*(5-4) = 4.2
    m, flag, tau = window_entropy(h, np.array([3, 2]), window=2)
    assert tau == pytest.approx(4.2)
    np.testing.assert_array_equal(flag, [False, False, False, False, True])


# --- RLPR ---------------------------------------------------------------------------


def test_rlpr_is_mean_token_probability_and_nan_for_empty_reference():
    lp = np.log(np.array([0.5, 0.25, 0.8]))
    # r0: (0.5 + 0.25) / 2 = 0.375 ; r1: no tokens -> NaN ; r2: 0.8
    r = rlpr_rewards(lp, np.array([2, 0, 1]))
    assert r.dtype == np.float32
    assert r[0] == pytest.approx(0.375) and math.isnan(r[1]) and r[2] == pytest.approx(0.8)


def test_entropy_flags_the_top_fifth_of_tokens_by_their_own_entropy_by_default():
    # the 80/20 paper's rule: a token is "forking" when its own entropy is in the batch's top 20 %
    h = np.array([0.1, 2.0, 0.3, 0.2, 1.5, 0.0, 0.4, 0.9, 0.05, 0.6])
    m, flag, tau = window_entropy(h, np.array([4, 6]))
    np.testing.assert_allclose(m, h, rtol=1e-6)
    assert tau == pytest.approx(np.quantile(h, 0.8)) and flag.tolist() == (h >= tau).tolist()
    assert flag.sum() == 2 and set(np.flatnonzero(flag)) == {1, 4}


def test_rlpr_debiasing_subtracts_the_no_reasoning_probability_floored_at_zero():
    from tokenmill.labelers.rewards.reward_math import rlpr_debiased

    out = rlpr_debiased(np.array([0.9, 0.3, 0.5, np.nan]), np.array([0.4, 0.5, 0.5, 0.2]))
    np.testing.assert_allclose(out[:3], [0.5, 0.0, 0.0], atol=1e-7)
    assert np.isnan(out[3]) and out.dtype == np.float32

