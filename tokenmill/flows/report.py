"""The `report` step: a run's plots (PNG + SVG), linked from a Prefect markdown artifact.

A thin task around `report/plots.py`. It ends the label, router and probe flows, so each
time a run gains labels, routing evaluations or probes its plots are redrawn. A failed
plot is logged, never fatal: the lake rows are what matter.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.report import artifacts
from tokenmill.report.plots import write_report
from tokenmill.storage.lake import Lake


@task(name="report", task_run_name="report {run_id}", cache_policy=NONE)
def report_task(lake: str, run_id: str) -> dict[str, list[str]]:
    try:
        written = {name: [str(p) for p in paths] for name, paths in write_report(Lake(lake), run_id).items()}
    except Exception as e:  # noqa: BLE001 — plots are a view; the flow's data is already committed
        get_run_logger().warning("report of run %s not drawn: %s", run_id, e)
        return {}
    artifacts.report_summary(lake, run_id, written)
    return written
