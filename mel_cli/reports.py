"""Rendering results for people: rich tables on stdout, notes and reports on stderr."""

from __future__ import annotations

import orjson
from rich.console import Console
from rich.table import Table

from mel.cli.errors import error, say


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


def print_json(data) -> None:
    """Indented JSON on stdout (the --json form of the info commands)."""
    import sys

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def print_skip_report(report) -> None:
    """What a reader skipped (malformed records, with file:line) and left out, on stderr."""
    for line in report.lines():
        say(line)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_index_info(details) -> None:
    console = Console(soft_wrap=True)
    model = details.model or {}
    print_mapping(f"Index {details.folder}", {
        "format": details.format,
        "entries": f"{details.entries:,}",
        "QIDs": f"{details.qids:,}",
        "dim": str(details.dim),
        "query encoding": details.query_encoding or "not recorded (link and eval refuse the index)",
        "model": f"{model.get('source', '?')} (sha256 {str(model.get('checksum', '?'))[:12]}…, {model.get('path')})",
        "size on disk": _size(details.size_bytes),
        "created": f"{details.created} by `{details.command}`",
        "settings": details.settings,
    }, console)
    table = Table(title="Entries by kind and language", title_justify="left")
    langs = sorted({lang for by_lang in details.by_kind_language.values() for lang in by_lang})
    table.add_column("kind")
    for lang in langs:
        table.add_column(lang, justify="right")
    table.add_column("total", justify="right")
    for kind, by_lang in details.by_kind_language.items():
        table.add_row(kind, *(f"{by_lang.get(lang, 0):,}" for lang in langs), f"{sum(by_lang.values()):,}")
    console.print(table)
    shards = Table(title="Shards", title_justify="left")
    for column in ("shard", "entries", "search", "leaves", "leaves searched"):
        shards.add_column(column, justify="right" if column != "shard" else "left")
    for shard in details.shards:
        shards.add_row(shard.name, f"{shard.entries:,}", shard.algorithm, str(shard.num_leaves or "-"),
                       str(shard.leaves_to_search or "-"))
    console.print(shards)


def print_verify_report(report) -> None:
    console = Console(soft_wrap=True)
    recall = "not measured (exact search only)" if report.recall_at_10 is None else \
        f"{report.recall_at_10:.4f} on {report.sample:,} stored vectors"
    model = {None: "not checked (model not found)", True: "matches", False: "DIFFERS"}[report.model_ok]
    print_mapping(f"Verify {report.folder}", {
        "files checked": f"{report.files_checked:,} ({_size(report.bytes_checked)})",
        "model": model,
        "ScaNN recall@10 vs exact": recall,
        "result": "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))",
    }, console)
    for problem in report.problems:
        error(problem)
