"""Progress reporting that tasks can call without knowing who is watching.

The CLI installs a rich progress bar with `use_sink`; under a Prefect worker nothing is
installed and `advance` only logs through Prefect's logger.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

_sink: Callable[[str, int, int], None] | None = None
_lock = threading.Lock()
_totals: dict[str, list[int]] = {}


def start(stage: str, total: int) -> None:
    with _lock:
        _totals[stage] = [0, total]
    _emit(stage)


def advance(stage: str, amount: int = 1) -> None:
    with _lock:
        done_total = _totals.setdefault(stage, [0, 0])
        done_total[0] += amount
    _emit(stage)


def _emit(stage: str) -> None:
    if _sink is not None:
        done, total = _totals[stage]
        _sink(stage, done, total)


@contextlib.contextmanager
def use_sink(sink: Callable[[str, int, int], None]):
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
        _totals.clear()


@contextlib.contextmanager
def rich_bars():
    """A rich progress display with one bar per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as prog:

        def sink(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(stage, total=total or None)
            prog.update(bars[stage], completed=done, total=total or None)

        with use_sink(sink):
            yield
