"""`python -m mel` runs the `mel` command."""

from mel.cli import main

main(prog_name="mel")
