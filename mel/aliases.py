"""Alias tables: mention strings of training links -> their QIDs, by count (docs/method.md).

An alias is the surface string of a training link (DaMuEL links placed by
Wikipedia editors, origin "wiki", unless all origins are asked for; or the
mentions of mel documents with gold QIDs). Links are counted per
(alias, QID); each alias keeps its `top_k` QIDs by count. Lookups are exact on
the normalised string: whitespace runs become one space, ends are trimmed, NUL
is dropped, and with `cased=False` the string is lower-cased.

On disk (format mel.aliases.v1), plain files, no pickle:

    manifest.json       format, sources with sha256, settings, counts, tool versions, command
    aliases.utf8        every alias, UTF-8, each followed by a NUL, in sorted (code point) order
    alias_offsets.npy   int64 (aliases + 1): alias i is aliases.utf8[off[i]:off[i+1] - 1]
    pair_offsets.npy    int64 (aliases + 1): alias i's QIDs are qids[p[i]:p[i+1]]
    qids.npy            int64 QID numbers, per alias by count (desc), then QID
    counts.npy          int64 link counts, parallel to qids.npy
    qid_set.npy         int64 sorted distinct QIDs (the table's "KB", for upper bounds)
    link_sketch.npy     uint64 fingerprints of the training links (a sample; mel.link_sketch);
                        tables counted from training links only

Opening maps the arrays and reads the string blob: no per-alias Python
objects, so a table of millions of aliases opens in well under a second, and
a lookup is a binary search (about 25 comparisons for 10 M aliases).

Building streams the sources: pairs are counted in memory up to
`flush_pairs`, spilled as sorted runs (zstd) and merged, so memory stays
bounded for any number of links.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import heapq
import io
import os
import re
import tempfile
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from mel.artifacts import atomic_folder, command_line, read_json, sha256_file, tool_versions, write_json
from mel.damuel import WIKI_ORIGINS, find_damuel_parts
from mel.errors import ArtifactError, InputError
from mel.kb import read_training_mentions
from mel.link_sketch import SKETCH_FILE, LinkSketch, SketchBuilder, mention_fingerprint
from mel.qids import qid_to_int, qid_to_str
from mel.records import KBEntity
from mel.skips import SkipReport
from mel.streams import is_stdio

FORMAT = "mel.aliases.v1"
MANIFEST_FILE = "manifest.json"
BLOB_FILE = "aliases.utf8"
DATA_FILES = ("alias_offsets.npy", "pair_offsets.npy", "qids.npy", "counts.npy", "qid_set.npy")
# The inverse index (QID -> its aliases), written by this version; older tables lack it.
INVERSE_FILES = ("qid_alias_offsets.npy", "qid_alias_rows.npy")
NORMALIZATION = "whitespace runs -> one space, trimmed, NUL removed"
LOOSE_NORMALIZATION = ("line-break hyphens (¬, soft hyphen) joined, NFKD, combining marks removed, case-folded, "
                       "non-word characters -> space, whitespace runs -> one")
_SEP = b"\x00"  # between alias and QID in sort keys: below every character an alias keeps
_NON_WORD = re.compile(r"[^\w]+")
# OCR of printed text marks a word broken at a line end with "¬" (or a soft hyphen): "Bundesversamm¬ lung".
_LINE_BREAK_HYPHEN = re.compile("[\u00ac\u00ad]\\s*")


def normalize_alias(text: str, cased: bool = True, loose: bool = False) -> str:
    """The form an alias is stored and looked up in.

    `loose` also folds case, accents and punctuation ("São Paulo", "SAO-PAULO" -> "sao paulo")
    and joins words broken at a line end ("Kon¬ stantinopel" -> "konstantinopel").
    """
    text = text.replace("\x00", "")
    if loose:
        text = _LINE_BREAK_HYPHEN.sub("", text)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        text = _NON_WORD.sub(" ", text.casefold()).replace("_", " ")
    text = " ".join(text.split())
    return text if cased or loose else text.lower()


@dataclass(frozen=True)
class AliasSettings:
    cased: bool = True
    all_origins: bool = False
    top_k: int = 100
    langs: tuple[str, ...] | None = None
    loose: bool = False  # keys folded in case, accents and punctuation (KB name tables)

    def to_json(self) -> dict:
        if self.loose:
            normalization = LOOSE_NORMALIZATION
        else:
            normalization = NORMALIZATION + ("" if self.cased else "; lower-cased")
        return {"cased": self.cased and not self.loose, "loose": self.loose,
                "origins": "all" if self.all_origins else list(WIKI_ORIGINS),
                "top_k": self.top_k, "langs": list(self.langs) if self.langs else None,
                "normalization": normalization}


# --- reading ------------------------------------------------------------------


class _Keys(Sequence):
    """The sorted aliases as UTF-8 bytes, sliced from the blob on demand (for bisect)."""

    def __init__(self, blob: bytes, offsets: np.ndarray):
        self.blob = blob
        # A memoryview of the mapped array gives Python ints five times faster than NumPy indexing.
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64).data

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # bisect only asks for single items
        return self.blob[self.offsets[i] : self.offsets[i + 1] - 1]


class AliasTable:
    """An alias table folder opened for lookups."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArtifactError(f"{self.folder}: alias table folder not found (build one with `mel alias build`)")
        self.manifest = read_json(self.folder / MANIFEST_FILE)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            found = self.manifest.get("format") if isinstance(self.manifest, dict) else None
            raise ArtifactError(f"{self.folder / MANIFEST_FILE}: not an alias table "
                                f"(format {found!r}, this mel reads {FORMAT!r})")
        for name, record in self.manifest.get("files", {}).items():
            path = self.folder / name
            if not path.is_file():
                raise ArtifactError(f"{path}: file not found (the alias table is incomplete)")
            if path.stat().st_size != record["bytes"]:
                raise ArtifactError(f"{path}: {path.stat().st_size} bytes, the manifest says "
                                    f"{record['bytes']} (the file is damaged)")
        self.blob = (self.folder / BLOB_FILE).read_bytes()
        arrays = {name: np.load(self.folder / name, mmap_mode="r", allow_pickle=False) for name in DATA_FILES}
        self.alias_offsets = arrays["alias_offsets.npy"]
        self.pair_offsets = arrays["pair_offsets.npy"]
        self.qids = arrays["qids.npy"]
        self.counts = arrays["counts.npy"]
        self.qid_set = arrays["qid_set.npy"]
        self._keys = _Keys(self.blob, self.alias_offsets)
        self._pairs = np.ascontiguousarray(self.pair_offsets, dtype=np.int64).data
        self._strings: list[str] | None = None
        self._totals: np.ndarray | None = None
        self._inverse: tuple[np.ndarray, np.ndarray] | None = None
        if all((self.folder / name).is_file() for name in INVERSE_FILES):
            offsets, rows = (np.load(self.folder / name, mmap_mode="r", allow_pickle=False) for name in INVERSE_FILES)
            if len(offsets) != len(self.qid_set) + 1 or (len(rows) and int(np.max(rows)) >= len(self)):
                raise ArtifactError(f"{self.folder}: the QID -> alias index does not fit the table (damaged)")
            self._inverse = (offsets, rows)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> AliasTable:
        return cls(folder)

    @property
    def cased(self) -> bool:
        return bool(self.manifest["settings"]["cased"])

    @property
    def loose(self) -> bool:
        return bool(self.manifest["settings"].get("loose", False))

    @property
    def languages(self) -> list[str]:
        return list(self.manifest.get("languages", []))

    @property
    def checksum(self) -> str:
        """sha256 of the manifest, which holds the sha256 of every data file."""
        return sha256_file(self.folder / MANIFEST_FILE)

    def __len__(self) -> int:
        return len(self._keys)

    def normalize(self, text: str) -> str:
        return normalize_alias(text, self.cased, self.loose)

    def alias(self, row: int) -> str:
        return self._keys[row].decode("utf-8")

    def find(self, alias: str) -> int:
        """Row of an already normalised alias, or -1."""
        key = alias.encode("utf-8", "surrogatepass")
        row = bisect.bisect_left(self._keys, key)
        return row if row < len(self._keys) and self._keys[row] == key else -1

    def qids_of(self, row: int) -> np.ndarray:
        return np.asarray(self.qids[self._pairs[row] : self._pairs[row + 1]])

    def counts_of(self, row: int) -> np.ndarray:
        return np.asarray(self.counts[self._pairs[row] : self._pairs[row + 1]])

    def lookup(self, text: str) -> list[tuple[str, int]]:
        """[(QID, count)] of a mention string, most linked first; [] when it is no alias."""
        row = self.find(self.normalize(text))
        if row < 0:
            return []
        return [(qid_to_str(q), int(c)) for q, c in zip(self.qids_of(row), self.counts_of(row))]

    def alias_rows_of_qid(self, qid: int) -> np.ndarray:
        """Rows of the aliases that name `qid` (needs the inverse index: tables of this version)."""
        if self._inverse is None:
            raise ArtifactError(f"{self.folder}: built by an older mel without the QID -> alias index; rebuild it")
        position = int(np.searchsorted(self.qid_set, qid))
        if position >= len(self.qid_set) or int(self.qid_set[position]) != qid:
            return np.zeros(0, dtype=np.int64)
        offsets, rows = self._inverse
        return np.asarray(rows[int(offsets[position]) : int(offsets[position + 1])])

    def contains(self, qids: np.ndarray) -> np.ndarray:
        """Whether each QID (int64) is the target of some alias."""
        qids = np.asarray(qids, dtype=np.int64)
        if len(self.qid_set) == 0:
            return np.zeros(len(qids), dtype=bool)
        position = np.searchsorted(self.qid_set, qids).clip(0, len(self.qid_set) - 1)
        return np.asarray(self.qid_set)[position] == qids

    def strings(self) -> list[str]:
        """Every alias, decoded (for string similarity; about 100 bytes each in memory)."""
        if self._strings is None:
            # Decoded a block at a time: one str of the whole blob would take up to 4 bytes a character.
            strings: list[str] = []
            offsets = self._keys.offsets
            for lo in range(0, len(self), 65536):
                hi = min(len(self), lo + 65536)
                strings += self.blob[offsets[lo] : offsets[hi] - 1].decode("utf-8", "surrogatepass").split("\x00")
            self._strings = strings
        return self._strings

    def alias_totals(self) -> np.ndarray:
        """Links per alias (over its kept QIDs), int64."""
        if self._totals is None:
            totals = np.zeros(len(self), dtype=np.int64)
            starts = np.asarray(self.pair_offsets[:-1])
            nonempty = np.asarray(self.pair_offsets[1:]) > starts
            if len(self.counts):
                sums = np.add.reduceat(np.asarray(self.counts), starts[nonempty])
                totals[nonempty] = sums
            self._totals = totals
        return self._totals

    def link_sketch(self) -> LinkSketch | None:
        """The fingerprints of the training links the table was counted from (None: a table of
        other pairs, or one built by an earlier mel)."""
        record = self.manifest.get("link_sketch")
        if record is None:
            return None
        if not isinstance(record, dict):
            raise ArtifactError(f"{self.folder / MANIFEST_FILE}: link_sketch is not an object")
        return LinkSketch.open(self.folder, record)

    def describe(self) -> dict:
        return {"path": str(self.folder), "manifest_sha256": self.checksum, "settings": self.manifest["settings"],
                "counts": self.manifest["counts"], "languages": self.languages}


# --- building -----------------------------------------------------------------


def _source_records(paths: Sequence[str], langs: Sequence[str] | None) -> list[dict]:
    """What each source is, with the sha256 of every file read (for the manifest)."""
    records: list[dict] = []
    for path in paths:
        if is_stdio(path):
            records.append({"path": "-", "kind": "documents", "sha256": None})
        elif Path(path).is_dir():
            for part in find_damuel_parts(path, langs):
                records.append({"path": str(part.folder), "kind": "damuel", "lang": part.lang,
                                "files": {p.name: sha256_file(p) for p in part.files}})
        else:
            records.append({"path": str(path), "kind": "documents", "sha256": sha256_file(path)})
    return records


def _spill(counter: dict[str, int], folder: Path, number: int) -> Path:
    """Write a sorted run of (key, count) lines, zstd-compressed."""
    path = folder / f"run-{number:05d}.zst"
    with open(path, "wb") as raw:
        with zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
            for key in sorted(counter):
                out.write(key.encode("utf-8", "surrogatepass") + b"\t" + str(counter[key]).encode() + b"\n")
    return path


def _read_run(path: Path) -> Iterator[tuple[bytes, int]]:
    with open(path, "rb") as raw:
        reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw), buffer_size=1 << 20)
        for line in reader:
            key, count = line[:-1].rsplit(b"\t", 1)
            yield key, int(count)


def _in_memory_run(counter: dict[str, int]) -> Iterator[tuple[bytes, int]]:
    for key in sorted(counter):
        yield key.encode("utf-8", "surrogatepass"), counter[key]


def _grouped(pairs: Iterable[tuple[bytes, int]]) -> Iterator[tuple[bytes, dict[int, int]]]:
    """Sorted (alias\\0qid, count) -> (alias, {qid: summed count}) per alias, in alias order.

    Sorting keys with the NUL separator sorts by alias first: NUL is below every
    character an alias can hold, so "a\\0…" precedes "a…\\0…".
    """
    current: bytes | None = None
    counts: dict[int, int] = {}
    for key, count in pairs:
        alias, qid = key.rsplit(_SEP, 1)
        if alias != current:
            if current is not None:
                yield current, counts
            current, counts = alias, {}
        number = int(qid)
        counts[number] = counts.get(number, 0) + count
    if current is not None:
        yield current, counts


@dataclass
class AliasBuildStats:
    mentions: int = 0
    aliases: int = 0
    pairs: int = 0
    pairs_before_top_k: int = 0
    runs: int = 0


def build_alias_table(out: str | os.PathLike, sources: Sequence[str], settings: AliasSettings = AliasSettings(), *,
                      report: SkipReport | None = None, force: bool = False, flush_pairs: int = 2_000_000,
                      progress: Callable[[int], None] | None = None) -> dict:
    """`mel alias build`: count the sources' links per (alias, QID) into a table at `out`.

    Returns the manifest. `progress` is called with the number of mentions read
    so far, every 100 000 mentions.
    """
    if not sources:
        raise InputError("no sources: give --links with DaMuEL language parts or mel documents with gold qids")
    report = report if report is not None else SkipReport()
    origins = None if settings.all_origins else WIKI_ORIGINS
    mentions = read_training_mentions(list(sources), langs=settings.langs, origins=origins, report=report)
    sketch = SketchBuilder()

    def pairs() -> Iterator[tuple[str, int, str]]:
        for m in mentions:
            qid = qid_to_int(m.qid)
            sketch.add(mention_fingerprint(m.text, m.start, m.end, qid))
            yield m.mention, qid, m.lang or "und"

    return count_aliases(out, pairs(), settings, sources=_source_records(sources, settings.langs), report=report,
                         force=force, flush_pairs=flush_pairs, progress=progress, what="training mentions",
                         sketch=sketch)


def build_name_table(out: str | os.PathLike, entities: Iterable[KBEntity], *, source: dict,
                     report: SkipReport | None = None, force: bool = False) -> dict:
    """A table of the KB's own names (labels and aliases, loosely normalised) -> their entities.

    A pair's count is the number of (entity, language) records that give the name, so a
    name shared across many languages counts more. The linker looks mentions up in it.
    """
    def pairs() -> Iterator[tuple[str, int, str]]:
        for entity in entities:
            seen = set()
            for name in (entity.label, *entity.aliases):
                key = normalize_alias(name, loose=True)
                if key and key not in seen:
                    seen.add(key)
                    yield name, entity.qid_int, entity.lang

    return count_aliases(out, pairs(), AliasSettings(loose=True, top_k=1_000_000, all_origins=True),
                         sources=[source], report=report or SkipReport(), force=force, what="KB names")


def count_aliases(out: str | os.PathLike, pairs: Iterable[tuple[str, int, str]], settings: AliasSettings, *,
                  sources: list[dict], report: SkipReport, force: bool = False, flush_pairs: int = 2_000_000,
                  progress: Callable[[int], None] | None = None, what: str = "pairs", empty_ok: bool = False,
                  sketch: SketchBuilder | None = None) -> dict:
    """Count (alias, QID number, language) items per (normalised alias, QID) into a table at `out`
    (with `empty_ok`, an empty table when there are none); `sketch`, filled while `pairs` is read,
    is written into the table (the training links' fingerprints, mel.link_sketch)."""
    if settings.top_k < 1:
        raise InputError("--top-k must be at least 1")
    stats = AliasBuildStats()
    languages: dict[str, int] = {}
    with atomic_folder(out, force=force) as tmp:
        spill_dir = Path(tempfile.mkdtemp(prefix="runs.", dir=tmp))
        counter: dict[str, int] = {}
        runs: list[Path] = []
        for text, qid, lang in pairs:
            stats.mentions += 1
            if progress is not None and stats.mentions % 100_000 == 0:
                progress(stats.mentions)
            alias = normalize_alias(text, settings.cased, settings.loose)
            if not alias:
                report.filter("mention string empty after normalisation")
                continue
            languages[lang] = languages.get(lang, 0) + 1
            key = f"{alias}\x00{qid}"
            counter[key] = counter.get(key, 0) + 1
            if len(counter) >= flush_pairs:
                runs.append(_spill(counter, spill_dir, len(runs)))
                counter = {}
        if progress is not None:
            progress(stats.mentions)
        if stats.mentions == 0 and not empty_ok:
            raise InputError(f"no {what} in the sources{report.why()}: nothing to count")
        if runs and counter:
            runs.append(_spill(counter, spill_dir, len(runs)))
            counter = {}
        stats.runs = len(runs)
        merged = heapq.merge(*(_read_run(p) for p in runs)) if runs else _in_memory_run(counter)
        _write_table(tmp, _grouped(merged), settings.top_k, stats)
        for path in runs:
            path.unlink()
        spill_dir.rmdir()
        files = [BLOB_FILE, *DATA_FILES, *INVERSE_FILES]
        sketch_record = None
        if sketch is not None:
            sketch_record = sketch.write(tmp)
            files.append(SKETCH_FILE)
        manifest = {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": command_line(),
            "tool_versions": tool_versions(),
            "sources": sources,
            "settings": settings.to_json(),
            "languages": sorted(languages),
            "counts": {"mentions": stats.mentions, "aliases": stats.aliases, "pairs": stats.pairs,
                       "pairs_before_top_k": stats.pairs_before_top_k,
                       "qids": int(len(np.load(tmp / "qid_set.npy", mmap_mode="r"))),
                       "mentions_by_language": dict(sorted(languages.items()))},
            "skipped": report.to_json(),
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                      for name in files},
        }
        if sketch_record is not None:
            manifest["link_sketch"] = sketch_record
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


def _write_table(folder: Path, groups: Iterable[tuple[bytes, dict[int, int]]], top_k: int,
                 stats: AliasBuildStats) -> None:
    alias_offsets, pair_offsets = array("q", [0]), array("q", [0])
    qids, counts = array("q"), array("q")
    written = 0
    with open(folder / BLOB_FILE, "wb") as blob:
        for alias, by_qid in groups:
            ranked = sorted(by_qid.items(), key=lambda item: (-item[1], item[0]))
            stats.pairs_before_top_k += len(ranked)
            ranked = ranked[:top_k]
            blob.write(alias + _SEP)
            written += len(alias) + 1
            alias_offsets.append(written)
            for qid, count in ranked:
                qids.append(qid)
                counts.append(count)
            pair_offsets.append(len(qids))
            stats.aliases += 1
    stats.pairs = len(qids)
    for name, values in (("alias_offsets.npy", alias_offsets), ("pair_offsets.npy", pair_offsets),
                         ("qids.npy", qids), ("counts.npy", counts)):
        np.save(folder / name, np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, np.int64))
    qid_array = np.frombuffer(qids, dtype=np.int64) if len(qids) else np.zeros(0, np.int64)
    qid_set = np.unique(qid_array)
    np.save(folder / "qid_set.npy", qid_set)
    # The inverse index: for each QID of qid_set (in order), the rows of the aliases naming it.
    pairs_per_alias = np.diff(np.frombuffer(pair_offsets, dtype=np.int64)).astype(np.int64)
    alias_of_pair = np.repeat(np.arange(len(pair_offsets) - 1, dtype=np.int64), pairs_per_alias)
    order = np.lexsort((alias_of_pair, qid_array))
    offsets = np.searchsorted(qid_array[order], qid_set, side="left")
    np.save(folder / "qid_alias_offsets.npy", np.append(offsets, len(order)).astype(np.int64))
    np.save(folder / "qid_alias_rows.npy", alias_of_pair[order])
