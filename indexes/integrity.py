"""What an index folder holds is checked before it is trusted.

- Names: every file a manifest names is a plain relative path (no "..", not
  absolute) whose resolved path, symbolic links followed, stays inside the folder.
- Files: size and sha256 against the manifest, read in one streaming pass (about
  what reading them costs anyway; README, "Build an index").
- Vectors: in the same pass, every row is finite and of unit length, as the
  builder stores them (a NaN row would score NaN, which search takes for "no
  result").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

from mel.errors import ArtifactError
from mel.indexes.store import VECTOR_DTYPE

_CHUNK = 1 << 20
_UNIT_TOLERANCE = 2e-3  # on the squared norm; rows normalised by the builder are within 1e-6


class Listed(Protocol):
    """A manifest's record of one file (mel.indexes.manifest.FileRecord)."""

    sha256: str
    bytes: int


def check_name(name: object, where: str) -> str:
    """`name` if it is a plain relative POSIX path (ArtifactError naming `where` otherwise)."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{where}: file name {name!r} is not a non-empty string")
    if "\\" in name or "\0" in name or any(part in ("", ".", "..") for part in name.split("/")):
        raise ArtifactError(f"{where}: file name {name!r} is not a plain relative path inside the index folder")
    return name


def inside(folder: Path, name: str, where: str) -> Path:
    """folder/name, refused when it leads (through a symbolic link) outside `folder`."""
    path = folder / name
    root = folder.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ArtifactError(f"{where}: {path} leads outside the index folder (to {resolved})")
    return path


def check_size(path: Path, expected: int) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found (the index is incomplete)") from None
    if size != expected:
        raise ArtifactError(f"{path}: {size} bytes, the manifest says {expected} (the file is damaged)")


def _mismatch(path: Path) -> ArtifactError:
    return ArtifactError(f"{path}: checksum mismatch (the file was changed or damaged)")


class _Hashing:
    """A file read through sha256: every byte read also goes into the digest."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.digest.update(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.handle.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n

    def rest(self) -> None:
        while self.read(_CHUNK):
            pass


def check_file(path: Path, record: Listed) -> None:
    """Size and sha256 as the manifest records them."""
    check_size(path, record.bytes)
    with open(path, "rb") as handle:
        reader = _Hashing(handle)
        reader.rest()
    if reader.digest.hexdigest() != record.sha256:
        raise _mismatch(path)


def check_vectors_file(path: Path, record: Listed | None, entries: int, dim: int, chunk_rows: int = 1 << 14) -> None:
    """A shard's vectors, in one pass: (entries, dim) float32 rows, finite and of unit length,
    and (with `record`) the manifest's size and sha256."""
    if record is not None:
        check_size(path, record.bytes)
    with open(path, "rb") as handle:
        reader = _Hashing(handle)
        try:
            version = np.lib.format.read_magic(reader)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(reader)
        except ValueError as exc:
            raise ArtifactError(f"{path}: not a readable .npy file ({exc})") from None
        if dtype != VECTOR_DTYPE or fortran or tuple(shape) != (entries, dim):
            raise ArtifactError(f"{path}: expected {VECTOR_DTYPE} vectors of shape {(entries, dim)}, "
                                f"found {dtype} {tuple(shape)}")
        for first in range(0, entries, chunk_rows):
            rows = np.empty((min(chunk_rows, entries - first), dim), dtype=VECTOR_DTYPE)
            if reader.readinto(rows.data.cast("B")) != rows.nbytes:
                raise ArtifactError(f"{path}: file is shorter than its header says")
            _check_rows(path, rows, first)
        reader.rest()
    if record is not None and reader.digest.hexdigest() != record.sha256:
        raise _mismatch(path)


def _check_rows(path: Path, rows: np.ndarray, first: int) -> None:
    # One pass: a NaN or infinite value makes the squared norm NaN or inf, which fails the test.
    bad = ~(np.abs(np.einsum("ij,ij->i", rows, rows) - 1.0) <= _UNIT_TOLERANCE)
    if bad.any():
        row = first + int(np.flatnonzero(bad)[0])
        raise ArtifactError(f"{path}: vector of entry row {row} is not a finite unit vector (the file is damaged)")
