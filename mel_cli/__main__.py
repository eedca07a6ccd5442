"""`python -m mel_cli` runs the `mel` command."""

from mel_cli import main

main(prog_name="mel")
