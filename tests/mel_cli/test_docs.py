"""Docs that must not drift: man pages, help examples, the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mel.cli import main as mel_main
from mel.cli.manpages import _commands, render_all

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = list(_commands(mel_main, ("mel",)))


def test_man_pages_are_generated_from_help():
    pages = render_all()
    on_disk = {p.name for p in (ROOT / "man").glob("*.1")}
    assert on_disk == set(pages), "man/ and the commands differ: run `make man`"
    for name, text in pages.items():
        assert (ROOT / "man" / name).read_text() == text, f"man/{name} is out of date: run `make man`"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and len(command.help.strip()) > 20, f"{' '.join(path)} lacks help text"
    assert "Example:" in command.help, f"{' '.join(path)} --help lacks an example"
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.help, f"{' '.join(path)} {param.opts[0]} lacks help"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme.split("##")[1], flags=re.M)
    assert len(commands) == 2, "README should give exactly two commands near the top"
    test_command = commands[1]
    assert re.search(rf"^\s*{test_command}\s*$", ci, flags=re.M), f".ci/run must run `{test_command}`"
