"""Generate man pages (roff) from the commands' --help, so docs never drift from code.

    python -m mel.cli.manpages man/        # write man/mel.1, man/mel-model.1, ...
    python -m mel.cli.manpages --check man/  # exit 1 when a page is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mel import __version__

_WIDTH = 80


def _commands(command: click.Command, path: tuple[str, ...]):
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(click.Context(command))):
            sub = command.get_command(click.Context(command), name)
            if sub is not None:
                yield from _commands(sub, path + (name,))


def help_text(command: click.Command, path: tuple[str, ...]) -> str:
    """The --help output, rendered at a fixed width so it is the same on every terminal.

    Contexts are built from the real command chain with the root's context settings
    (e.g. `-h` as a help option), as `mel ... --help` itself would.
    """
    from mel.cli import main as root

    settings = dict(root.context_settings, terminal_width=_WIDTH, max_content_width=_WIDTH)
    ctx = click.Context(root, info_name=path[0], **settings)
    for name in path[1:]:
        group = ctx.command
        assert isinstance(group, click.Group)
        sub = group.get_command(ctx, name)
        assert sub is not None
        ctx = click.Context(sub, info_name=name, parent=ctx,
                            terminal_width=_WIDTH, max_content_width=_WIDTH)
    assert ctx.command is command
    return command.get_help(ctx)


def _roff_escape(line: str) -> str:
    line = line.replace("\\", "\\e")
    return ("\\&" + line) if line.startswith((".", "'")) else line


def render(command: click.Command, path: tuple[str, ...]) -> str:
    name = "-".join(path)
    summary = command.get_short_help_str(limit=200)
    lines = [
        f'.TH "{name.upper()}" "1" "" "mel {__version__}" "mel manual"',
        ".SH NAME",
        f"{name} \\- {_roff_escape(summary)}",
        ".SH SYNOPSIS AND DESCRIPTION",
        ".nf",
        *(_roff_escape(line) for line in help_text(command, path).splitlines()),
        ".fi",
    ]
    if isinstance(command, click.Group):
        subs = [f"{name}-{sub}(1)" for sub in sorted(command.list_commands(click.Context(command)))]
        lines += [".SH SEE ALSO", ", ".join(subs)]
    return "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    from mel.cli import main

    return {"-".join(path) + ".1": render(cmd, path) for path, cmd in _commands(main, ("mel",))}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    folder = Path(args[0] if args else "man")
    pages = render_all()
    stale = [n for n, text in pages.items() if not (folder / n).is_file() or (folder / n).read_text() != text]
    extra = sorted(p.name for p in folder.glob("*.1") if p.name not in pages) if folder.is_dir() else []
    if check:
        for name in stale + extra:
            print(f"{folder / name}: out of date (run: make man)", file=sys.stderr)
        return 1 if stale or extra else 0
    folder.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (folder / name).write_text(pages[name])
    for name in extra:
        (folder / name).unlink()
    print(f"{len(pages)} man pages in {folder} ({len(stale)} updated, {len(extra)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
