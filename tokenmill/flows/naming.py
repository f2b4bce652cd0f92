"""Task-run names that read well in the Prefect UI.

Shards are passed as lake paths (`…/rollouts/run_id=r1/part-3f9a….parquet`); in a run's
name only the file's short stem helps: `score part-3f9a0c12`.
"""

from __future__ import annotations

import posixpath
from typing import Callable


def short(value):
    if isinstance(value, str) and value.endswith(".parquet"):
        return posixpath.basename(value)[: -len(".parquet")][:13]
    return value


def run_name(template: str) -> Callable[[], str]:
    """`task_run_name=` callable: `template` formatted with the task's (shortened) parameters."""

    def name() -> str:
        from prefect.runtime import task_run

        return template.format(**{k: short(v) for k, v in task_run.parameters.items()})

    return name
