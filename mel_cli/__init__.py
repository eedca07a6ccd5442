"""The `mel` command line: thin click commands over the library modules."""

from __future__ import annotations

import click

from mel import __version__
from mel.cli.errors import MelGroup


@click.group(cls=MelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mel")
def main() -> None:
    """Offline, batch, multilingual entity linking to Wikidata.

    mel encodes marked mentions with a small ONNX bi-encoder, searches a sharded
    ScaNN index of Wikidata entities, and writes QIDs. Models and indexes are
    plain folders with manifests; nothing needs a network connection.

    \b
    Example:
      mel model default
      mel index build --kb kb.jsonl -o idx/
      mel link docs.jsonl --index idx/ -o linked.jsonl
    """


def _register() -> None:
    from mel.cli import alias, eval, index, info, link, model, train

    main.add_command(model.model)
    main.add_command(index.index)
    main.add_command(link.link)
    main.add_command(alias.alias_group)
    main.add_command(eval.eval_group)
    main.add_command(train.train)
    main.add_command(info.info)
    _same_help_options(main)


def _same_help_options(command: click.Command) -> None:
    """`-h` works on every command, also when one is invoked on its own (tests, man pages):
    click caches a command's help option, so it must not depend on the parent."""
    command.context_settings.setdefault("help_option_names", ["-h", "--help"])
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _same_help_options(sub)


_register()
