"""How the CLI talks on stderr: one printer for notes and errors, and one line per failure.

Every message reads `mel: error: …` or `mel: note: …`; library errors (MelError) and
click's usage errors alike end in one such line and an exit code, never a traceback.
"""

from __future__ import annotations

import sys

import click

from mel.errors import MelError


def note(message: str) -> None:
    click.echo(f"mel: note: {message}", err=True)


def error(message: str) -> None:
    click.echo(f"mel: error: {message}", err=True)


def say(message: str) -> None:
    """A plain line on stderr (summaries, progress that is not a bar)."""
    click.echo(message, err=True)


class MelGroup(click.Group):
    """A click Group whose commands report MelError as one line, exit code 1 (or the error's),
    and whose usage errors read `mel: error: …` too (exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MelError as exc:
            error(str(exc))
            ctx.exit(exc.exit_code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `mel` alone: the help, as click shows it
                exc.show()
                sys.exit(exc.exit_code)
            if exc.ctx is not None:
                say(exc.ctx.get_usage())
                say(f"Try '{exc.ctx.command_path} -h' for help.")
            error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
