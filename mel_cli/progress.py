"""Progress on stderr with rich, shown only when stderr is a terminal (and not --quiet).

The library reports progress through callbacks (an index build's BuildProgress, the
training loop's TrainProgress, plain functions for link and eval); these are their
displays.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from mel.cli.errors import note
from mel.indexes.builder import BuildProgress
from mel.training.progress import TrainProgress


def _stderr_console() -> Console:
    # A duplicate of the stderr descriptor: progress stays visible while the real
    # fd 2 is pointed at a log file during ScaNN training (its C++ logging).
    try:
        handle = open(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):
        return Console(stderr=True)
    return Console(file=handle)


def _shown(enabled: bool) -> bool:
    return enabled and sys.stderr.isatty()


@contextlib.contextmanager
def spinner(label: str, enabled: bool = True):
    """Yield show(describe), where describe(elapsed_seconds) gives the status text;
    None when progress is off (quiet, or stderr is not a terminal)."""
    if not _shown(enabled):
        yield None
        return
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label)

        def show(describe: Callable[[float], str]) -> None:
            bar.update(task, description=describe(max(1e-9, time.perf_counter() - started)))

        yield show


@contextlib.contextmanager
def link_progress(enabled: bool = True):
    """Yield a callback taking LinkStats (or None when progress is off)."""
    with spinner("linking", enabled) as show:
        if show is None:
            yield None
            return

        def update(stats) -> None:
            show(lambda elapsed: f"{stats.documents:,} documents ({stats.documents / elapsed:,.0f}/s), "
                                 f"{stats.mentions:,} mentions ({stats.mentions / elapsed:,.0f}/s)")

        yield update


@contextlib.contextmanager
def eval_progress(enabled: bool = True):
    """Yield a callback taking (mentions done, current language), or None when progress is off."""
    with spinner("evaluating", enabled) as show:
        if show is None:
            yield None
            return

        def update(done: int, lang: str) -> None:
            show(lambda elapsed: f"{done:,} mentions ({done / elapsed:,.0f}/s), now {lang}")

        yield update


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} entries/s" if speed else "… entries/s", style="progress.data.speed")


class IndexProgress(BuildProgress):
    """An index build's progress bar; notes always print (as `mel: note:` lines)."""

    def __init__(self, enabled: bool = True):
        self.enabled = _shown(enabled)
        self._bar: Progress | None = None
        self._console: Console | None = None

    def __enter__(self) -> IndexProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def note(self, text: str) -> None:
        note(text)

    def start(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        self._console = _stderr_console()
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                             TextColumn("{task.completed:,.0f}{task.fields[of]} entries"), _RateColumn(),
                             TimeElapsedColumn(), console=self._console)
        self._task = self._bar.add_task("indexing", total=total, completed=done, of=f" / {total:,}" if total else "")
        self._bar.start()

    def advance(self, entries: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, entries)

    def status(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            if self._console is not None and self._console.file is not sys.stderr:
                self._console.file.close()


class TrainingProgress(TrainProgress):
    """The training loop's phases as one progress bar at a time, and its messages on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._bar: Progress | None = None

    def __enter__(self) -> TrainingProgress:
        if _shown(self.enabled):
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def phase(self, description: str, total: int | None) -> Callable[[int], None]:
        bar = self._bar
        if bar is None:
            return lambda n: None
        for old in list(bar.task_ids):
            bar.remove_task(old)
        task = bar.add_task(description, total=total)
        return lambda n: bar.advance(task, n)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
