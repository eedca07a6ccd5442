"""rich progress on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def spinner(label: str, enabled: bool = True):
    """Yield show(describe), where describe(elapsed_seconds) gives the status text;
    None when progress is off (quiet, or stderr is not a terminal)."""
    if not enabled or not sys.stderr.isatty():
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
