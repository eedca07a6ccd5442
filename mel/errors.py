"""User-facing errors: each becomes one line on stderr and a non-zero exit code."""

from __future__ import annotations


class MelError(Exception):
    """A problem the user can fix (bad input, missing file, wrong model).

    The message is one line saying what is wrong and where; the CLI prints it
    as ``mel: error: <message>`` and exits with `exit_code`.
    """

    exit_code = 1


class InputError(MelError):
    """Malformed input data (file, line and field are in the message)."""


class ModelError(MelError):
    """A model folder or checkpoint is missing, unsupported or corrupt."""


class ArtifactError(MelError):
    """An artifact on disk is missing, malformed, or fails its checksum."""


class OutputError(MelError):
    """An output cannot be written: a read-only folder, a full disk, a parent that is a file."""


class RecordError(ValueError):
    """A record that cannot be used; the message is the reason, for a human.

    Readers catch it per record (counted, reported with file and line, skipped);
    it is not a MelError because one bad record does not end a run.
    """
