"""Token-Supervised Value Model targets (TVM, Lee et al. 2024): the empirical probability
of a correct answer given each prefix (formula: targets.py; labeler: labeler.py)."""

from __future__ import annotations

from tokenmill.labelers.family import LabelFamily, LabelScope, TokenOutput
from tokenmill.labelers.tvm import table  # noqa: F401  (registers tvm_targets with the lake)
from tokenmill.labelers.tvm.config import TvmConfig


def _build(cfg):
    from tokenmill.labelers.tvm.labeler import TvmLabeler

    return TvmLabeler(cfg.tvm)


FAMILY = LabelFamily(
    name="tvm", title="value targets (TVM)", config=TvmConfig, tables=("tvm_targets",), build=_build,
    paper="Token-Supervised Value Models for Enhancing Mathematical Problem-Solving Capabilities of LLMs (TVM)",
    scopes=(LabelScope("tvm", "tvm_targets", title="TVM value targets", outputs=(
        TokenOutput("tvm_value", "TVM value target", "continuous", "max(value)",
                    "share of correct rollouts among those sharing this prefix (probability of success from here)",
                    domain=(0.0, 1.0)),
        TokenOutput("tvm_paths", "rollouts through the prefix", "continuous", "max(paths)", detail=True),
    )),),
)
