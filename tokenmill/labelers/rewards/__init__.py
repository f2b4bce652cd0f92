"""Token rewards and advantages: DPO implicit reward, GRPO, TEMPO, D³S, high-entropy
forking tokens, RLPR (formulas: `reward_math.py`; labeler: `labeler.py`)."""

from __future__ import annotations

from tokenmill.labelers.family import SCORE, LabelFamily, LabelScope, TokenOutput
from tokenmill.labelers.rewards.config import REWARD_KINDS, RewardsConfig


def _build(cfg):
    from tokenmill.labelers.rewards.labeler import RewardsLabeler

    return RewardsLabeler(cfg.rewards, cfg.models, cfg.engine, cfg.engine_options)


def _kind(kind: str, *outputs: TokenOutput, title: str) -> LabelScope:
    return LabelScope(kind, "token_rewards", outputs, where=f"kind = '{kind}'", title=title)


FAMILY = LabelFamily(
    name="rewards", title="token rewards", config=RewardsConfig, tables=("token_rewards",), needs=frozenset({SCORE}),
    paper="DPO implicit reward (Rafailov et al. 2024; TGDPO); GRPO (DeepSeekMath); TEMPO; D³S; ARES; RLPR",
    build=_build,
    scopes=(
        _kind("dpo", TokenOutput("dpo", "DPO implicit reward", "continuous", "max(value)",
                                 "β·(log π − log π_ref) per token", scale="diverging"), title="DPO reward"),
        _kind("grpo", TokenOutput("grpo", "GRPO advantage", "continuous", "max(value)",
                                  "group-normalised outcome advantage, on every token", scale="diverging"), title="GRPO"),
        _kind("tempo", TokenOutput("tempo", "TEMPO advantage", "continuous", "max(value)",
                                   "prefix-tree (branch) advantage per token", scale="diverging"), title="TEMPO"),
        _kind("d3s", TokenOutput("d3s", "D³S score", "continuous", "max(value)", "|A|·H per token", scale="diverging"),
              TokenOutput("d3s_keep", "D³S kept", "flag", "bool_or(flag)", "the token is among the kept share",
                          detail=True), title="D³S"),
        _kind("entropy", TokenOutput("entropy_flag", "high-entropy token (80/20)", "flag", "bool_or(flag)",
                                     "the token's entropy (or, with window > 1, its trailing window's) is in "
                                     "the shard's top 20 %"), title="entropy"),
        _kind("rlpr", TokenOutput("rlpr", "RLPR reward", "continuous", "max(value)",
                                  "debiased probability of the reference answer: with the reasoning minus without, "
                                  "floored at 0 (on every token)", domain=(0.0, 1.0)), title="RLPR"),
        _kind("rlpr_raw", TokenOutput("rlpr_raw", "RLPR raw probability", "continuous", "max(value)",
                                      "mean probability of the reference answer after the reasoning (not debiased)",
                                      domain=(0.0, 1.0)), title="RLPR (raw)"),
    ),
)
assert {s.name for s in FAMILY.scopes} == set(REWARD_KINDS)
