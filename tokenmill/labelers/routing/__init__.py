"""R2R routing labels: each token of a large model's trajectory against a small model's
next token — identical, neutral or divergent (labeler: `labeler.py`)."""

from __future__ import annotations

from tokenmill.labelers.family import GENERATE, SCORE, LabelFamily, LabelScope, TokenOutput
from tokenmill.labelers.routing.config import RoutingConfig


def _build(cfg):
    from tokenmill.labelers.routing.labeler import RoutingLabeler

    return RoutingLabeler(cfg.routing, cfg.engine, cfg.engine_options)


FAMILY = LabelFamily(
    name="routing", title="routing (R2R)", config=RoutingConfig, tables=("routing", "router_features"),
    needs=frozenset({GENERATE, SCORE}), build=_build,
    paper="R2R: Efficiently Navigating Divergent Reasoning Paths with Small-Large Model Token Routing",
    scopes=(LabelScope("routing", "routing", title="R2R routing", outputs=(
        TokenOutput("routing", "routing class (R2R)", "categorical",
                    "['identical', 'neutral', 'divergent', 'undecidable'][max(label) + 1]",
                    "the small model's next token against the large model's: identical, neutral, divergent, or "
                    "undecidable (left out of router training)",
                    categories={"identical": "#e8f1fb", "neutral": "#fdd49e", "divergent": "#e34a33",
                                "undecidable": "#bdbdbd"}),
        TokenOutput("small_token_id", "small model's token", "continuous", "any_value(small_token_id)", detail=True),
    )),),
)
