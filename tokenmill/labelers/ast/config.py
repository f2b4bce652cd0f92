"""Settings of the AST labeler."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import Settings

class AstConfig(Settings):
    """Where the code in completions is and which language it is."""

    language: str | None = Field(None, description="language of code without a fence tag (default: python for the code and humaneval worlds)")
    whole_completion_worlds: list[str] = Field(default_factory=lambda: ["code", "humaneval"],
                                               description="worlds whose unfenced completion is code as a whole")
