"""Hallucinated entity spans: extracted spans, their knowledge-base verdicts and uncertainty
scores (min/mean probability, CCP, consistency) (labeler: `labeler.py`)."""

from __future__ import annotations

from tokenmill.labelers.family import LabelFamily, LabelScope, TokenOutput
from tokenmill.labelers.hallucination.config import HallucinationConfig


def _build(cfg):
    from tokenmill.labelers.hallucination.labeler import HallucinationLabeler

    return HallucinationLabeler(cfg.hallucination)


# severity on overlap: the worst verdict of the spans a token is in wins
_SEVERITY = "CASE WHEN s.span_id IS NULL THEN NULL WHEN s.label = 'supported' THEN 1 WHEN s.label = 'unverifiable' THEN 2 " \
            "WHEN s.label = 'not_supported' THEN 3 ELSE 0 END"
# every token of a rollout with spans: inside one, its verdict and risk; `halluc` is the
# probes' target (1 not supported, 0 supported, −100 elsewhere)
_SQL = f"""
SELECT t.rollout_id, t.pos,
       coalesce(max(CASE s.label WHEN 'not_supported' THEN 1 WHEN 'supported' THEN 0 END), -100) AS halluc,
       ['unlabelled', 'supported', 'unverifiable', 'not_supported'][max({_SEVERITY}) + 1] AS halluc_label,
       max(1 - s.min_prob) AS halluc_risk
FROM {{tokens}} t JOIN (SELECT DISTINCT rollout_id FROM {{rows}}) l ON l.rollout_id = t.rollout_id
LEFT JOIN {{rows}} s ON s.rollout_id = t.rollout_id AND t.pos BETWEEN s.start_pos AND s.end_pos
GROUP BY t.rollout_id, t.pos
"""

FAMILY = LabelFamily(
    name="hallucination", title="hallucination spans", config=HallucinationConfig, tables=("hallucination_spans",),
    build=_build,
    paper="Real-Time Detection of Hallucinated Entities in Long-Form Generation; CCP (Fadeeva et al. 2024); SelfCheckGPT",
    scopes=(LabelScope("halluc", "hallucination_spans", sql=_SQL, title="hallucination spans", outputs=(
        TokenOutput("halluc_label", "hallucination span label", "categorical", "",
                    "verdict of the entity span the token is in (most severe when spans overlap)",
                    categories={"unlabelled": "#d9d9d9", "supported": "#a1d99b", "unverifiable": "#fdd49e",
                                "not_supported": "#e34a33"}),
        TokenOutput("halluc_risk", "hallucination span risk", "continuous", "",
                    "1 − min token probability of the span the token is in", domain=(0.0, 1.0)),
        TokenOutput("halluc", "probe target", "continuous", "", "1 in a not-supported span, 0 in a supported one, "
                    "−100 elsewhere", detail=True),
    )),),
)
