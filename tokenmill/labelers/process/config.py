"""Settings of the process labeler (`labeler.py`)."""

from __future__ import annotations

from pydantic import Field

from tokenmill.common_config import Settings


class ProcessConfig(Settings):
    """Which rollouts get process labels."""

    verdicts: list[str] = Field(["correct", "incorrect"], description="label rollouts with these verdicts (a "
                                                                     "correct one can still hold a wrong step)")
