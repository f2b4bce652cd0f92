"""The efficacy study's statistics, on cases worked by hand."""

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.config import named_arms
from tokenmill.studies.efficacy import paired_interval, summarise, t975


def test_paired_interval_is_the_t_interval_of_the_differences():
    # mean 0.02, sample std 0.01, n 3: half-width t₀.₉₇₅(2) · 0.01 / √3 = 4.303 · 0.005774 = 0.024843
    m, lo, hi = paired_interval(np.array([0.01, 0.03, 0.02]))
    assert m == pytest.approx(0.02) and hi - m == pytest.approx(0.024843, abs=1e-6) and m - lo == pytest.approx(hi - m)
    assert paired_interval(np.array([0.05])) == (0.05, 0.05, 0.05)  # one pair: no interval


def test_t_quantiles_follow_the_table_then_the_expansion():
    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.0211, abs=1e-3) and t975(120) == pytest.approx(1.9799, abs=1e-3)


def test_summary_pairs_each_arm_with_its_counterpart_and_the_base_by_seed():
    rows = [{"seed": s, "arm": arm, "accuracy": acc} for s, accs in enumerate([(0.10, 0.12, 0.15), (0.11, 0.12, 0.14),
                                                                              (0.09, 0.13, 0.13)])
            for arm, acc in zip(("base", "sft", "sft-process"), accs)]
    table = summarise(pa.Table.from_pylist(rows[::-1])).to_pylist()
    assert [r["arm"] for r in table] == ["base", "sft", "sft-process"]  # base first, arms in their fixed order
    out = {r["arm"]: r for r in table}
    p = out["sft-process"]
    # vs sft: differences 0.03, 0.02, 0.00 → mean 0.01667, std 0.01528, half 4.303 · 0.01528 / √3 = 0.03795
    assert p["vs"] == "sft" and p["diff_mean"] == pytest.approx(0.0167, abs=1e-4)
    assert p["diff_high"] - p["diff_mean"] == pytest.approx(0.0379, abs=2e-4) and p["wins"] == "2/3"
    # vs base: 0.05, 0.03, 0.04 → mean 0.04, std 0.01, interval 0.04 ± 0.02484: excludes zero
    assert p["vs_base"] == "base" and p["base_diff_low"] == pytest.approx(0.0152, abs=1e-4) and p["base_wins"] == "3/3"
    assert out["base"]["vs_base"] is None and out["sft"]["vs"] is None and out["sft"]["base_diff_mean"] == pytest.approx(0.0233, abs=1e-4)


def test_the_printed_table_shows_each_interval_beside_its_mean():
    from tokenmill.studies.efficacy import efficacy_table

    rows = [{"seed": s, "arm": arm, "accuracy": acc} for s in range(3)
            for arm, acc in (("base", 0.1), ("sft", 0.12 + 0.01 * s))]
    t = efficacy_table(summarise(pa.Table.from_pylist(rows)).to_pylist()).to_pylist()
    # sft − base: 0.02, 0.03, 0.04 → +0.030 ± 4.303 · 0.01 / √3 = ± 0.0248
    assert t[1]["Δ vs base"] == "+0.030 [+0.005, +0.055]" and t[1]["accuracy"] == "0.130 [0.105, 0.155]"
    assert t[0]["Δ vs base"] is None and t[1]["vs"] is None


def test_the_study_computes_only_the_reward_kinds_its_arms_read():
    from tokenmill.config import Arm
    from tokenmill.studies.efficacy import study_configs

    def kinds(arms):
        return study_configs("l", [0], arms=named_arms(arms) if isinstance(arms[0], str) else arms)[0].rewards.kinds

    assert kinds(["sft-reward", "sft"]) == ["grpo"]
    assert kinds(["dpo", "cdpo"]) == ["grpo"]  # pairs read verdicts; grpo scores nothing
    d3s = Arm(name="sft-d3s", recipe="weighted-sft", params={"where": "true", "weight": "d3s_keep::INT * (1 + entropy_flag::INT)"})
    assert kinds([d3s]) == ["d3s", "entropy"]  # outputs named apart from their kinds count as their scope (kind)
