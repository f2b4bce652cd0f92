"""Settings of the hallucination-span labeler."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import Settings

class HallucinationConfig(Settings):
    """Entity spans, their ground truth and uncertainty scores."""

    extractors: list[str] | None = Field(None, description="span extractors (default: kb — the world's own claims — "
                                                            "for bios and countries rollouts; numbers, dates, names, "
                                                            "titles for the rest)")
    annotator: Literal["kb", "none"] = Field("kb", description="ground truth: the rollout's knowledge-base world "
                                                               "(bios people, countries facts) judges each span, or none")
    verdicts_file: str | None = Field(None, description="JSONL span verdicts in the paper's format (span, label, index)")
    insufficient: Literal["not_supported", "unverifiable"] = Field(
        "not_supported", description="verdicts file: what \"Insufficient Information\" is — not_supported (a "
                                     "hallucination, as obalcells/hallucination_probes labels it) or unverifiable "
                                     "(tokenmill's variant: left out of training)")
    judge: Literal["surface"] = Field("surface", description="CCP equivalence judge")
