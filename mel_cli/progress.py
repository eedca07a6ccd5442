"""rich progress on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
import time

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def link_progress(enabled: bool = True):
    """Yield a callback taking LinkStats (or None when progress is off)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("linking")

        def update(stats) -> None:
            elapsed = max(1e-9, time.perf_counter() - started)
            bar.update(task, description=f"{stats.documents:,} documents ({stats.documents / elapsed:,.0f}/s), "
                                         f"{stats.mentions:,} mentions ({stats.mentions / elapsed:,.0f}/s)")

        yield update
