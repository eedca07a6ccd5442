"""On-disk entry tables of an index shard, in plain .npy and JSON files.

A shard folder holds, row for row:

    qids.npy     int64    the entry's QID as an integer (Q90 -> 90)
    kinds.npy    uint8    index into the manifest's `kinds` vocabulary
    langs.npy    uint16   index into the manifest's `languages` vocabulary
    labels.json  a JSON list of display labels
    vectors      float32 (n, dim), L2-normalised: `vectors.npy`, or ScaNN's own
                 `scann/dataset.npy` when ScaNN stored the identical array

While a shard is being filled, its tables are *spilled*: rows are appended to
.npy files whose header is rewritten when the shard is complete, and labels go
to `labels.jsonl`, one JSON string a line. Memory stays bounded by one batch,
and an interrupted build can keep every row that reached disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from mel.errors import ArtifactError
from mel.qids import QID_DTYPE

KIND_DTYPE = np.dtype("u1")
LANG_DTYPE = np.dtype("<u2")
VECTOR_DTYPE = np.dtype("<f4")

LABELS_FILE = "labels.json"
LABELS_SPILL = "labels.jsonl"
VECTORS_FILE = "vectors.npy"

# A .npy header as NumPy writes it for small shapes: 10 bytes of magic, version
# and length, then a padded dict, 128 bytes in all. Fixed size, so it can be
# rewritten in place once the final row count is known.
_NPY_HEADER_BYTES = 128
_NPY_MAGIC = b"\x93NUMPY\x01\x00"

def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': {shape!r}, }}"
    room = _NPY_HEADER_BYTES - len(_NPY_MAGIC) - 2 - 1
    if len(text) > room:
        raise ValueError(f"shape {shape} too large for a fixed .npy header")
    text = text.ljust(room) + "\n"
    return _NPY_MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


class GrowingNpy:
    """An .npy file that rows are appended to; the header is fixed at `close`."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...] = (), rows: int = 0):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        self.rows = rows
        self._file: BinaryIO
        if rows == 0:
            self._file = open(self.path, "wb")
            self._file.write(_npy_header(self.dtype, (0, *self.row_shape)))
        else:
            # Reopen after an interruption: keep `rows` rows, drop anything after.
            self._file = open(self.path, "r+b")
            self._file.truncate(_NPY_HEADER_BYTES + rows * self.row_bytes)
            self._file.seek(0, os.SEEK_END)

    @staticmethod
    def rows_on_disk(path: Path, dtype: np.dtype, row_shape: tuple[int, ...] = ()) -> int:
        """Complete rows present in a spill file (0 if it is missing)."""
        try:
            size = Path(path).stat().st_size
        except FileNotFoundError:
            return 0
        row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape, dtype=np.int64))
        return max(0, size - _NPY_HEADER_BYTES) // row_bytes

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._file.write(rows.tobytes())
        self.rows += len(rows)

    def sync(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write the final header and close; the file is then a normal .npy."""
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.sync()
        self._file.close()

    def abandon(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class LabelSpill:
    """Labels appended as JSON Lines, turned into a JSON list at `close`."""

    def __init__(self, folder: Path, rows: int = 0, size: int = 0):
        self.path = Path(folder) / LABELS_SPILL
        self.final_path = Path(folder) / LABELS_FILE
        self.rows = rows
        self.size = size  # bytes written so far, for checkpoints
        self._file: BinaryIO
        if rows == 0:
            self._file = open(self.path, "wb")
        else:
            self._file = open(self.path, "r+b")
            self._file.truncate(size)
            self._file.seek(0, os.SEEK_END)

    def append(self, labels: Sequence[str]) -> None:
        data = b"".join(orjson.dumps(label) + b"\n" for label in labels)
        self._file.write(data)
        self.rows += len(labels)
        self.size += len(data)

    def sync(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        # Each line is already a JSON string literal, so the list is a join.
        self.sync()
        self._file.close()
        with open(self.path, "rb") as lines, open(self.final_path, "wb") as out:
            out.write(b"[")
            for number, line in enumerate(lines):
                out.write(b"\n" if number == 0 else b",\n")
                out.write(line.rstrip(b"\n"))
            out.write(b"\n]\n")
            out.flush()
            os.fsync(out.fileno())

    def abandon(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class ShardSpill:
    """The write side of one shard: appends rows to every table at once."""

    def __init__(self, folder: Path, dim: int, rows: int = 0, labels_size: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vectors = GrowingNpy(self.folder / VECTORS_FILE, VECTOR_DTYPE, (dim,), rows)
        self.qids = GrowingNpy(self.folder / "qids.npy", QID_DTYPE, (), rows)
        self.kinds = GrowingNpy(self.folder / "kinds.npy", KIND_DTYPE, (), rows)
        self.langs = GrowingNpy(self.folder / "langs.npy", LANG_DTYPE, (), rows)
        self.labels = LabelSpill(self.folder, rows, labels_size)
        self._tables = (self.vectors, self.qids, self.kinds, self.langs, self.labels)

    @staticmethod
    def rows_on_disk(folder: Path, dim: int) -> int:
        """Rows complete in every spilled table (labels are checked by the caller)."""
        folder = Path(folder)
        return min(
            GrowingNpy.rows_on_disk(folder / VECTORS_FILE, VECTOR_DTYPE, (dim,)),
            GrowingNpy.rows_on_disk(folder / "qids.npy", QID_DTYPE),
            GrowingNpy.rows_on_disk(folder / "kinds.npy", KIND_DTYPE),
            GrowingNpy.rows_on_disk(folder / "langs.npy", LANG_DTYPE),
        )

    @property
    def rows(self) -> int:
        return self.qids.rows

    def append(self, vectors, qids, kinds, langs, labels) -> None:
        self.vectors.append(vectors)
        self.qids.append(qids)
        self.kinds.append(kinds)
        self.langs.append(langs)
        self.labels.append(labels)

    def sync(self) -> None:
        for table in self._tables:
            table.sync()

    def close(self) -> None:
        """Finish every table; the spill files stay until the shard is recorded."""
        for table in self._tables:
            table.close()

    def abandon(self) -> None:
        for table in self._tables:
            table.abandon()


def npy_chunks(path: Path, chunk_rows: int = 1 << 15, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Rows of a C-ordered .npy file in chunks, read with plain file I/O.

    Unlike a memory map, reads leave nothing mapped into the process, so the
    resident size stays at one chunk however large the file is.
    """
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            formats = np.lib.format
            read_header = formats.read_array_header_1_0 if version == (1, 0) else formats.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
        except ValueError as exc:
            raise ArtifactError(f"{path}: not a readable .npy file ({exc})") from None
        if fortran or dtype.hasobject:
            raise ArtifactError(f"{path}: not a plain C-ordered numeric .npy file")
        row_shape = shape[1:]
        row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        stop = shape[0] if stop is None else min(stop, shape[0])
        handle.seek(start * row_bytes, os.SEEK_CUR)
        for first in range(start, stop, chunk_rows):
            chunk = np.empty((min(chunk_rows, stop - first), *row_shape), dtype=dtype)
            if handle.readinto(chunk.data.cast("B")) != chunk.nbytes:
                raise ArtifactError(f"{path}: file is shorter than its header says")
            yield chunk


def read_npy_rows(path: Path, rows: np.ndarray, chunk_rows: int = 1 << 15) -> np.ndarray:
    """The given rows (sorted, unique) of a .npy file, streamed in chunks."""
    out, filled, first = None, 0, 0
    for chunk in npy_chunks(path, chunk_rows):
        if out is None:
            out = np.empty((len(rows), *chunk.shape[1:]), dtype=chunk.dtype)
        lo, hi = np.searchsorted(rows, [first, first + len(chunk)])
        out[filled : filled + hi - lo] = chunk[rows[lo:hi] - first]
        filled += hi - lo
        first += len(chunk)
    if out is None or filled != len(rows):
        raise ArtifactError(f"{path}: fewer rows than requested")
    return out


def same_npy_rows(path_a: Path, path_b: Path, chunk_rows: int = 1 << 15) -> bool:
    """Whether two .npy files hold the same array (headers may differ)."""
    try:
        pairs = zip(npy_chunks(path_a, chunk_rows), npy_chunks(path_b, chunk_rows), strict=True)
        return all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs)
    except (ValueError, OSError, ArtifactError):
        return False


def load_npy(path: Path, dtype: np.dtype, shape: tuple[int | None, ...], mmap: bool = False) -> np.ndarray:
    """np.load that never unpickles and checks dtype and shape (None: any)."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable .npy file ({exc})") from None
    if array.dtype != dtype or len(array.shape) != len(shape) or any(
        want is not None and want != got for want, got in zip(shape, array.shape)
    ):
        raise ArtifactError(
            f"{path}: expected {dtype} array of shape {shape}, found {array.dtype} {array.shape}"
        )
    return array


@dataclass(frozen=True)
class Entry:
    """One index entry, as `Index.entry` returns it."""

    entry_id: int
    qid: str
    kind: str
    lang: str
    label: str

    def to_json(self) -> dict:
        return {"entry_id": self.entry_id, "qid": self.qid, "kind": self.kind, "lang": self.lang, "label": self.label}

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        return cls(int(data["entry_id"]), data["qid"], data["kind"], data["lang"], data["label"])


class ShardTables:
    """The read side of one finished shard: tables in memory, vectors mapped."""

    def __init__(self, folder: Path, entries: int, dim: int, vectors_file: str, num_kinds: int, num_langs: int):
        self.folder = Path(folder)
        self.entries = entries
        self.qids = load_npy(self.folder / "qids.npy", QID_DTYPE, (entries,))
        self.kinds = load_npy(self.folder / "kinds.npy", KIND_DTYPE, (entries,))
        self.langs = load_npy(self.folder / "langs.npy", LANG_DTYPE, (entries,))
        if entries and (int(self.kinds.max()) >= num_kinds or int(self.langs.max()) >= num_langs):
            raise ArtifactError(f"{self.folder}/kinds.npy or langs.npy: code outside the manifest's vocabulary")
        if entries and int(self.qids.min()) <= 0:
            raise ArtifactError(f"{self.folder}/qids.npy: a QID number below 1 (the file is damaged)")
        self._vectors_path = self.folder / vectors_file
        self._dim = dim
        self._vectors: np.ndarray | None = None
        self._labels: list[str] | None = None

    @property
    def vectors(self) -> np.ndarray:
        """(entries, dim) float32, memory-mapped (pages load on use)."""
        if self._vectors is None:
            self._vectors = load_npy(self._vectors_path, VECTOR_DTYPE, (self.entries, self._dim), mmap=True)
        return self._vectors

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            path = self.folder / LABELS_FILE
            try:
                labels = orjson.loads(path.read_bytes())
            except FileNotFoundError:
                raise ArtifactError(f"{path}: file not found") from None
            except orjson.JSONDecodeError as exc:
                raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
            if not isinstance(labels, list) or len(labels) != self.entries or not all(
                    isinstance(label, str) for label in labels):
                raise ArtifactError(f"{path}: expected a list of {self.entries} label strings")
            self._labels = labels
        return self._labels
