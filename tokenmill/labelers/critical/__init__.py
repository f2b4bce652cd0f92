"""Critical tokens by contrastive estimation (cDPO, "Critical Tokens Matter"):
p_CE of each token and its weight 1 − p_CE (labeler: `labeler.py`)."""

from __future__ import annotations

from tokenmill.labelers.critical.config import CriticalConfig
from tokenmill.labelers.family import LOGITS, SCORE, LabelFamily, LabelScope, TokenOutput


def _build(cfg):
    from tokenmill.labelers.critical.labeler import CriticalLabeler

    return CriticalLabeler(cfg.critical, cfg.engine, cfg.engine_options)


FAMILY = LabelFamily(
    name="critical", title="critical tokens", config=CriticalConfig, tables=("critical", "critical_truth"),
    needs=frozenset({LOGITS, SCORE}), build=_build,
    paper="Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning Capability (cDPO)",
    scopes=(LabelScope("critical", "critical", title="cDPO critical tokens", outputs=(
        TokenOutput("critical_weight", "critical weight (cDPO)", "continuous", "max(weight)",
                    "cDPO token weight 1 − p_CE: high where the model trained on wrong answers prefers the token",
                    domain=(0.0, 1.0)),
        TokenOutput("p_ce", "p_CE", "continuous", "max(p_ce)", "contrastive estimate: low = critical", detail=True),
        TokenOutput("is_critical", "critical", "flag", "bool_or(is_critical)", "among the rollout's most critical tokens",
                    detail=True),
    )),),
)
