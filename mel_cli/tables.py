"""Rendering results for people: rich tables on stdout."""

from __future__ import annotations

import orjson
from rich.console import Console
from rich.table import Table


def print_mapping(title: str, data: dict, console: Console | None = None) -> None:
    """A two-column table of a (possibly nested) mapping; nested values as compact JSON."""
    console = console or Console(soft_wrap=True)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        table.add_row(key, shown)
    console.print(table)
