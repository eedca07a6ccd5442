"""How the CLI talks on stderr: one printer for notes and errors, and one line per failure.

Every message reads `mel: error: …` or `mel: note: …`; library errors (MelError) and
click's usage errors alike end in one such line and an exit code, never a traceback.
Ctrl-C (SIGINT), SIGTERM and SIGHUP stop a command alike: an exception unwinds through
the library, which removes what it had not finished, and the exit code is 128 + the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import click

from mel.errors import MelError


def note(message: str) -> None:
    click.echo(f"mel: note: {message}", err=True)


def error(message: str) -> None:
    click.echo(f"mel: error: {message}", err=True)


def say(message: str) -> None:
    """A plain line on stderr (summaries, progress that is not a bar)."""
    click.echo(message, err=True)


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that only
    cleanup code (`finally`, `except BaseException: …; raise`) sees it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    for number in STOP_SIGNALS:
        if signal.getsignal(number) == _stop:
            signal.signal(number, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While the command runs, the stop signals raise `Stopped` in the main thread. A signal
    ignored by whoever started mel (`nohup`, a shell's background job) stays ignored."""
    previous = {}
    try:
        for number in STOP_SIGNALS:
            if signal.getsignal(number) != signal.SIG_IGN:
                previous[number] = signal.signal(number, _stop)
    except ValueError:  # not the main thread (an embedding application): leave its handlers alone
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _exit_for_signal(signum: int) -> None:
    error(f"stopped by {signal.Signals(signum).name}")
    # The library has cleaned up on the way here. Skip the interpreter's shutdown: a reader
    # thread still waiting on a pipe holds stdin's lock, which shutdown would wait for.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + signum)


class MelGroup(click.Group):
    """A click Group whose commands report MelError as one line, exit code 1 (or the error's),
    and whose usage errors read `mel: error: …` too (exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MelError as exc:
            error(str(exc))
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            raise  # click ends quietly on a closed stdout
        except OSError as exc:  # the last resort (a disk that fills mid-build): one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            error(f"{where}{exc.strerror or exc}")
            ctx.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            with stop_signals_raise():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Stopped as stopped:
            _exit_for_signal(stopped.signum)
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
