"""Labelers: each turns a run's rollouts (and their scores) into a label table.

`LABELERS` maps a name to a factory taking the `LabelConfig`; adding a labeler is one
subclass of `base.Labeler` and one entry here.
"""

from __future__ import annotations

from typing import Callable

from tokenmill.tasks.labels.base import Labeler


def _rewards(cfg) -> Labeler:
    from tokenmill.tasks.labels.rewards import RewardsLabeler

    return RewardsLabeler(cfg.rewards, cfg.models, cfg.engine, cfg.engine_options)


def _critical(cfg) -> Labeler:
    from tokenmill.tasks.labels.critical import CriticalLabeler

    return CriticalLabeler(cfg.critical)


def _routing(cfg) -> Labeler:
    from tokenmill.tasks.labels.routing import RoutingLabeler

    return RoutingLabeler(cfg.routing)


def _hallucination(cfg) -> Labeler:
    from tokenmill.tasks.labels.hallucination import HallucinationLabeler

    return HallucinationLabeler(cfg.hallucination)


def _ast(cfg) -> Labeler:
    from tokenmill.tasks.labels.ast import AstLabeler

    return AstLabeler(cfg.ast)


LABELERS: dict[str, Callable[..., Labeler]] = {"rewards": _rewards, "critical": _critical, "routing": _routing,
                                               "hallucination": _hallucination, "ast": _ast}


def build_labeler(name: str, cfg) -> Labeler:
    from tokenmill.errors import TokenmillError

    if name not in LABELERS:
        raise TokenmillError(f"unknown labeler {name!r}", fix=f"choose from {', '.join(LABELERS)}")
    return LABELERS[name](cfg)
