"""Which training links a table was counted from, kept as a sample of their fingerprints.

A gold mention that is also one of an index's training links (`--links`) finds its own
alias count and its own context entry: tuned on such gold, the reranker learns to trust
priors and context scores that new text never gives, and links new documents far worse
(on HIPE-2022 dev, R@1 fell from 42.4 untuned to 5.4). So an alias table built from links
keeps the smallest CAPACITY of their mentions' 64-bit fingerprints (a bottom-k sketch: a
uniform sample that needs no second pass and stays bounded for any number of links; all of
them when there are fewer), and `mel index tune` measures how many of its gold mentions
are among them.

A reranker fitted on gold keeps a smaller sketch of the same kind, of its gold mentions, in its
JSON (`sketch_json`): `mel eval` and `mel index tune` then say when the gold they are given is
what the reranker was fitted on, whatever the files are called.

A mention's fingerprint hashes its gold QID, its offsets and its text with WINDOW code
points either side, so the same mention read from the same document gives the same
fingerprint whichever reader (mel documents, DaMuEL) produced it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.errors import ArtifactError

SKETCH_FILE = "link_sketch.npy"
CAPACITY = 1 << 20  # fingerprints kept: 8 MiB at most
WINDOW = 100  # code points of context either side of the mention, in the fingerprint
GOLD_CAPACITY = 4096  # gold mentions a reranker's JSON keeps the fingerprints of: about 80 KB


def mention_fingerprint(text: str, start: int, end: int, qid: int) -> int:
    """A 64-bit fingerprint of the mention text[start:end] linked to QID number `qid`."""
    window = text[max(0, start - WINDOW):end + WINDOW]
    key = f"{qid}\x00{start}\x00{end}\x00{window}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class SketchBuilder:
    """The smallest `capacity` distinct fingerprints of those added (memory: about two capacities)."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.kept = np.zeros(0, dtype=np.uint64)
        self.pending: list[int] = []
        self.added = 0

    def add(self, fingerprint: int) -> None:
        self.added += 1
        if len(self.kept) == self.capacity and fingerprint >= int(self.kept[-1]):
            return
        self.pending.append(fingerprint)
        if len(self.pending) >= self.capacity:
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            merged = np.unique(np.concatenate([self.kept, np.array(self.pending, dtype=np.uint64)]))
            self.kept = merged[:self.capacity]
            self.pending = []

    def write(self, folder: Path) -> dict:
        """Write the sketch into `folder`; returns its manifest record."""
        self._merge()
        np.save(folder / SKETCH_FILE, self.kept)
        return {"file": SKETCH_FILE, "capacity": self.capacity, "mentions": self.added,
                "kept": int(len(self.kept)), "window": WINDOW}


@dataclass(frozen=True)
class LinkOverlap:
    """Of a set's mentions, how many could be checked (fell in the sketch's sample) and how many
    of those are training links of the table."""

    mentions: int
    checked: int
    found: int

    def __add__(self, other: LinkOverlap) -> LinkOverlap:
        """Both sets' counts together (overlaps of the parts of one set add up)."""
        return LinkOverlap(self.mentions + other.mentions, self.checked + other.checked, self.found + other.found)

    @property
    def share(self) -> float:
        """The estimated share of the mentions that are training links."""
        return self.found / self.checked if self.checked else 0.0


class LinkSketch:
    """A table's sketch, checked on opening: sorted distinct uint64, at most its capacity."""

    def __init__(self, fingerprints: np.ndarray, record: dict):
        self.fingerprints = fingerprints
        self.full = len(fingerprints) == int(record["capacity"]) and int(record["mentions"]) > len(fingerprints)

    @classmethod
    def open(cls, folder: Path, record: dict) -> LinkSketch:
        path = folder / SKETCH_FILE
        try:
            capacity, kept = int(record["capacity"]), int(record["kept"])
            int(record["mentions"])
            values = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ArtifactError(f"{path}: file not found (the alias table is incomplete)") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable link sketch ({exc})") from None
        if values.dtype != np.uint64 or values.ndim != 1 or len(values) != kept or kept > capacity \
                or (len(values) > 1 and not bool(np.all(values[1:] > values[:-1]))):
            raise ArtifactError(f"{path}: not a link sketch (sorted distinct uint64, {kept} of at most {capacity})")
        return cls(values, record)

    @classmethod
    def from_json(cls, data: object, where: str) -> LinkSketch | None:
        """A sketch written by `sketch_json`, checked; None when its fingerprints hash another
        window than this mel's (they cannot be compared)."""
        try:
            if int(data["window"]) != WINDOW:  # type: ignore[index]
                return None
            capacity, mentions = int(data["capacity"]), int(data["mentions"])  # type: ignore[index]
            values = np.array([int(text, 16) for text in data["fingerprints"]], dtype=np.uint64)  # type: ignore[index]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(f"{where}: unreadable gold sketch ({exc})") from None
        if capacity < 1 or len(values) > capacity or len(values) > mentions \
                or (len(values) > 1 and not bool(np.all(values[1:] > values[:-1]))):
            raise ArtifactError(f"{where}: not a gold sketch (sorted distinct fingerprints, at most "
                                f"{capacity} and at most its {mentions} mentions)")
        return cls(values, {"capacity": capacity, "mentions": mentions})

    def overlap(self, fingerprints: np.ndarray) -> LinkOverlap:
        """How many of `fingerprints` (uint64) are in the links: exactly when the sketch holds every
        link, else among those below its largest fingerprint (a uniform sample of the mentions)."""
        fingerprints = np.asarray(fingerprints, dtype=np.uint64)
        checked = fingerprints[fingerprints <= self.fingerprints[-1]] if self.full else fingerprints
        found = int(np.isin(checked, self.fingerprints).sum()) if len(self.fingerprints) else 0
        return LinkOverlap(len(fingerprints), int(len(checked)), found)


def sketch_json(fingerprints: np.ndarray, capacity: int = GOLD_CAPACITY) -> dict:
    """The smallest `capacity` distinct of `fingerprints` (uint64) as JSON, hex strings (JSON
    numbers past 2**53 do not survive every reader)."""
    fingerprints = np.asarray(fingerprints, dtype=np.uint64)
    kept = np.unique(fingerprints)[:capacity]
    return {"capacity": capacity, "mentions": int(len(fingerprints)), "window": WINDOW,
            "fingerprints": [f"{int(value):016x}" for value in kept]}
