"""Run the rollouts or the label flow the way an entry point does: its input checks first
(bad input fails before any write, and for rollouts before Prefect is imported), then the
flow under a task runner sized from the work. `bars` wraps the flow (the CLI's progress
bars); the CLI's commands and the demo both start their stages here."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager


def run_rollouts(cfg, bars: Callable[[], ContextManager] = contextlib.nullcontext) -> dict:
    from tokenmill.tasks.prompts import preflight

    preflight(cfg)
    from tokenmill.flows.rollouts import rollouts_flow
    from tokenmill.flows.runners import with_runner

    with bars():
        return with_runner(rollouts_flow, cfg.runner, cfg.work_tokens())(cfg)


def run_label(cfg, bars: Callable[[], ContextManager] = contextlib.nullcontext) -> dict:
    from tokenmill.flows.label import check_label_run, label_flow, label_work, run_tokens
    from tokenmill.flows.runners import with_runner
    from tokenmill.storage.lake import Lake

    check_label_run(cfg)
    work = label_work(run_tokens(Lake(cfg.lake), cfg.run_id), cfg.labelers)
    with bars():
        return with_runner(label_flow, cfg.runner, work)(cfg)
