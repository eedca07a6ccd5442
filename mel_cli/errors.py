"""How the CLI turns library errors into one clear line and an exit code."""

from __future__ import annotations

import click

from mel.errors import MelError


def run_command_group() -> type[click.Group]:
    """A click Group whose commands report MelError as one line, exit code 1 (or the error's)."""

    class MelGroup(click.Group):
        def invoke(self, ctx: click.Context):
            try:
                return super().invoke(ctx)
            except MelError as exc:
                click.echo(f"mel: error: {exc}", err=True)
                ctx.exit(exc.exit_code)

    return MelGroup
