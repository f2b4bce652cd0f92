"""Publishing to the Prefect UI: table, markdown and progress artifacts, only inside a
Prefect run (plain functions, tests and CLI commands outside one publish nothing). A failure
to publish is logged and never fails the work: the lake, not the UI, holds the results.
What each flow publishes is `report/artifacts.py`; progress bars are `progress.py`.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from typing import Any, Callable

import pyarrow as pa

_log = logging.getLogger("tokenmill.report")


def in_prefect_run() -> bool:
    if "prefect" not in sys.modules:  # no run without Prefect; plain CLI commands never import it
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", key)[:200] or "tokenmill"


def _publish(what: str, fn: Callable[[], Any]) -> Any:
    if not in_prefect_run():
        return None
    try:
        return fn()
    except Exception as e:  # the UI is a view; a failed publish must not lose the run's work
        try:
            from prefect import get_run_logger

            get_run_logger().warning("could not publish the %s artifact: %s", what, e)
        except Exception:
            _log.warning("could not publish the %s artifact: %s", what, e)
        return None


def json_rows(table: pa.Table) -> list[dict]:
    # the API stores JSON: NaN/inf would be rejected, so they become null
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in table.to_pylist()]


def publish_table(key: str, table: pa.Table | list[dict], description: str) -> Any:
    from prefect.artifacts import create_table_artifact

    rows = json_rows(table) if isinstance(table, pa.Table) else table
    return _publish(key, lambda: create_table_artifact(table=rows, key=key, description=description))


def publish_markdown(key: str, text: str, description: str) -> Any:
    from prefect.artifacts import create_markdown_artifact

    return _publish(key, lambda: create_markdown_artifact(markdown=text, key=key, description=description))


def progress_artifact(stage: str, total: int):
    from prefect.artifacts import create_progress_artifact

    return _publish(f"progress {stage}", lambda: create_progress_artifact(
        progress=0.0, key=artifact_key("progress", stage), description=f"{stage}: 0/{total}"))


def update_progress(artifact_id, stage: str, done: int, total: int) -> None:
    from prefect.artifacts import update_progress_artifact

    pct = 100.0 * done / total if total else 100.0
    _publish(f"progress {stage}", lambda: update_progress_artifact(artifact_id=artifact_id, progress=min(pct, 100.0),
                                                                   description=f"{stage}: {done}/{total}"))
