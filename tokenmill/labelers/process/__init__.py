"""Process labels: where a rollout's first wrong step starts, from a world's exact step
checker (`World.first_error`; the arithmetic world has one). Token-level truth that no
model estimates: the oracle that p_CE, entropy, D³S, TEMPO credit and R2R divergence are
scored against, and an upper bound for token-weighted training (labeler: labeler.py)."""

from __future__ import annotations

from tokenmill.labelers.family import LabelFamily, LabelScope, TokenOutput
from tokenmill.labelers.process import table  # noqa: F401  (registers process_labels with the lake)
from tokenmill.labelers.process.config import ProcessConfig


def _build(cfg):
    from tokenmill.labelers.process.labeler import ProcessLabeler

    return ProcessLabeler(cfg.process)


FAMILY = LabelFamily(
    name="process", title="process truth (step checker)", config=ProcessConfig, tables=("process_labels",),
    build=_build, paper="tokenmill's oracle: the world's exact step checker (e.g. arithmetic's chain of results)",
    scopes=(LabelScope("process", "process_labels", title="process truth", outputs=(
        TokenOutput("process_error", "first wrong token", "flag", "bool_or(first_error)",
                    "the token where the rollout's first wrong step starts"),
        TokenOutput("process_ok", "before the first error", "flag", "bool_or(before_error)",
                    "every step up to this token is right", detail=True),
        TokenOutput("process_step", "step", "continuous", "max(step)",
                    "the step the first error is in (on every token of the rollout; −1: no error)", detail=True),
    )),),
)
