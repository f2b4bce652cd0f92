"""Progress reporting that tasks can call without knowing who is watching.

The CLI installs a rich progress bar with `use_sink`. Inside a Prefect flow or task run,
`start` also creates a progress artifact per stage and `advance` moves it, so the Prefect
UI shows how far a long flow is (updates are throttled to whole percents, at most one a
second but always the last: each is an API call, and a 500-step training would make 100). Progress
reported in another process than the one that started the stage (a Ray worker) only
reaches that process's sink. `advance(..., note=…)` attaches a short text to the stage (a
training loss): the bars show it beside the count, the artifact in its description.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

_sink: Callable[[str, int, int], None] | None = None
_lock = threading.Lock()
_totals: dict[str, list[int]] = {}
_artifacts: dict[str, list] = {}  # stage -> [artifact id, last percent published, when]
PUBLISH_EVERY_S = 1.0
_notes: dict[str, str] = {}  # stage -> the latest note


def start(stage: str, total: int) -> None:
    with _lock:
        _totals[stage] = [0, total]
        _artifacts.pop(stage, None)
        _notes.pop(stage, None)
    _emit(stage)
    from tokenmill import prefect_ui

    aid = prefect_ui.progress_artifact(stage, total)
    if aid is not None:
        with _lock:
            _artifacts[stage] = [aid, 0, time.monotonic()]


def advance(stage: str, amount: int = 1, note: str | None = None) -> None:
    with _lock:
        done_total = _totals.setdefault(stage, [0, 0])
        done_total[0] += amount
        if note is not None:
            _notes[stage] = note
    _emit(stage)
    _publish(stage)


def _emit(stage: str) -> None:
    if _sink is not None:
        done, total = _totals[stage]
        _sink(stage, done, total)


def _publish(stage: str) -> None:
    with _lock:
        art = _artifacts.get(stage)
        done, total = _totals[stage]
        pct = int(100 * done / total) if total else 100
        now = time.monotonic()
        if art is None or pct <= art[1] or (done < total and now - art[2] < PUBLISH_EVERY_S):
            return
        art[1], art[2] = pct, now
    from tokenmill import prefect_ui

    text = _notes.get(stage)
    prefect_ui.update_progress(art[0], f"{stage} ({text})" if text else stage, done, total)


def note_of(stage: str) -> str:
    """The stage's latest note ("" if none)."""
    return _notes.get(stage, "")


@contextlib.contextmanager
def use_sink(sink: Callable[[str, int, int], None]):
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
        _totals.clear()
        _notes.clear()


@contextlib.contextmanager
def rich_bars():
    """A rich progress display with one bar per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[note]}")) as prog:

        def sink(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(stage, total=total or None, note="")
            prog.update(bars[stage], completed=done, total=total or None, note=note_of(stage))

        with use_sink(sink):
            yield
