"""Streaming, resumable construction of an index folder.

Entries arrive in batches (vectors plus QID, kind, language and label); each
batch is appended to the current shard's spill files, so memory holds one
batch, and one shard while its ScaNN searcher is trained. The build happens in
a hidden folder next to the target, `.<name>.partial`, renamed into place only
once the manifest is written: an interrupted build never leaves something that
opens as an index.

Resuming (resume=True) reuses every completed shard whose checksums still
match, plus the rows of the unfinished shard up to its last checkpoint; the
caller then feeds entries from `writer.entries_done` on. `sources` (name ->
`mel.artifacts.fingerprint`) is recorded, and a resume whose sources changed
is refused, as the old and the new entries would mix:

    with IndexWriter(out, dim=384, extra={"model": {...}}, resume=True) as writer:
        for batch in encode(kb_entries(start=writer.entries_done)):
            writer.add(batch.vectors, batch.qids, "description", batch.langs, batch.labels)
    manifest = writer.manifest
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.artifacts import (
    cannot_write,
    command_line,
    fingerprint_change,
    follow_links,
    read_json,
    replace_folder,
    sha256_file,
    tool_versions,
    write_json,
)
from mel.errors import ArtifactError, InputError, RecordError
from mel.indexes.manifest import (
    FORMAT,
    KINDS,
    MANIFEST_FILE,
    QID_SET_FILE,
    FileRecord,
    IndexCounts,
    IndexManifest,
    ShardRecord,
    check_extra,
    file_records,
    files_match,
)
from mel.indexes.scann_backend import build_scann_searcher, save_scann_searcher, scann_available
from mel.indexes.settings import IndexSettings, shard_search_config
from mel.indexes.store import (
    KIND_DTYPE,
    LABELS_SPILL,
    LANG_DTYPE,
    VECTOR_DTYPE,
    VECTORS_FILE,
    ShardSpill,
    load_npy,
    same_npy_rows,
)
from mel.qids import QID_DTYPE, parse_qids

BUILD_STATE_FILE = "build.json"
_BUILD_STATE_FORMAT = FORMAT + ".partial"
_SCANN_FOLDER = "scann"
_MAX_LANGUAGES = int(np.iinfo(LANG_DTYPE).max)


class NoEntries(InputError):
    """The build was given no entry at all (nothing to index)."""


def partial_folder(folder: str | os.PathLike) -> Path:
    """Where the build of `folder` happens (and can be resumed from)."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.partial")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


@dataclass(frozen=True)
class EntryBatch:
    """A batch of index entries, row for row."""

    vectors: np.ndarray  # (n, dim) float32
    qids: Sequence[str | int] | np.ndarray  # "Q90" or 90
    kinds: str | Sequence[str]  # one of KINDS, or one for the whole batch
    langs: str | Sequence[str]
    labels: Sequence[str]


class BuildProgress:
    """What an index build reports as it goes; the default reports nothing.

    The command line shows it as a progress bar (mel.cli.progress); a library
    caller may subclass it, or pass None.
    """

    def start(self, done: int, total: int | None) -> None:
        """The build starts (or resumes) with `done` entries already stored."""

    def advance(self, entries: int) -> None:
        """`entries` more entries are stored."""

    def status(self, text: str) -> None:
        """What the build is doing now ("shard-00001: training ScaNN (tree ah)")."""

    def note(self, text: str) -> None:
        """Something the user should be told (ScaNN missing, an old partial build removed)."""

    def stop(self) -> None:
        """The build finished or stopped."""


def _shard_counts(folder: Path, rows: int, languages: list[str]) -> dict[str, dict[str, int]]:
    kinds = load_npy(folder / "kinds.npy", KIND_DTYPE, (rows,))
    langs = load_npy(folder / "langs.npy", LANG_DTYPE, (rows,))
    pairs = np.bincount(kinds.astype(np.int64) * len(languages) + langs, minlength=len(KINDS) * len(languages))
    counts: dict[str, dict[str, int]] = {}
    for code in np.flatnonzero(pairs):
        kind, lang = divmod(int(code), len(languages))
        counts.setdefault(KINDS[kind], {})[languages[lang]] = int(pairs[code])
    return counts


class IndexWriter:
    """Writes an index folder from batches of entries; see the module docstring."""

    def __init__(
        self,
        folder: str | os.PathLike,
        dim: int,
        *,
        settings: IndexSettings = IndexSettings(),
        extra: dict | None = None,
        resume: bool = False,
        force: bool = False,
        progress: BuildProgress | None = None,
        total: int | None = None,
        checkpoint_seconds: float = 30.0,
        sources: dict[str, dict] | None = None,
        first_shard: int = 0,
    ):
        # A symbolic link is kept: the folder it leads to is what gets replaced.
        self.folder = follow_links(folder) if Path(folder).is_symlink() else Path(folder)
        if self.folder.exists() and not force:
            raise ArtifactError(f"{self.folder} already exists (use --force to replace it)")
        if dim < 1:
            raise ValueError("dim must be at least 1")
        self.dim = dim
        self.force = force
        self.extra = check_extra(extra or {})
        self.sources = sources or {}
        self.notes: list[str] = []  # things the caller should tell the user
        if settings.scann and not scann_available():
            settings = IndexSettings(**{**settings.to_json(), "scann": False})
            self.notes.append("ScaNN is not installed (Linux x86-64 only): shards will be searched exactly")
        self.settings = settings
        self.partial = partial_folder(self.folder)
        self.checkpoint_seconds = checkpoint_seconds
        # The number of this writer's first shard in a larger index (a part of a sharded build): it
        # seeds ScaNN's training as the single-process build of the whole index would.
        self.first_shard = first_shard
        self.manifest: IndexManifest | None = None
        self._progress = progress or BuildProgress()
        self.reused_shards = 0
        self.reused_rows = 0
        self._spill: ShardSpill | None = None
        self._last_checkpoint = time.monotonic()
        self._closed = False
        self._kind_codes = {kind: code for code, kind in enumerate(KINDS)}

        if resume and (self.partial / BUILD_STATE_FILE).is_file():
            self._resume()
        else:
            if self.partial.exists():
                self.notes.append(f"removed an unfinished build at {self.partial}")
                shutil.rmtree(self.partial)
            try:
                self.partial.mkdir(parents=True)
            except OSError as exc:
                raise cannot_write(self.folder, exc) from None
            self._shards: list[ShardRecord] = []
            self._languages: list[str] = []
            self._write_state()
        self._lang_codes = {lang: code for code, lang in enumerate(self._languages)}

        for note in self.notes:
            self._progress.note(note)
        self._progress.start(self.entries_done, total)
        if self._spill is not None and self._spill.rows >= self.settings.shard_size:
            try:
                self._finish_shard()  # resumed after the last shard's rows were all spilled
            except BaseException:
                self.abort()
                raise

    # -- state -------------------------------------------------------------

    @property
    def entries_done(self) -> int:
        """Entries already stored; a resumed build continues from here."""
        done = sum(shard.entries for shard in self._shards)
        return done + (self._spill.rows if self._spill else 0)

    def _state(self) -> dict:
        current = None
        if self._spill is not None:
            spill = self._spill
            current = {"name": spill.folder.name, "rows": spill.rows, "labels_bytes": spill.labels.size}
        return {
            "format": _BUILD_STATE_FORMAT,
            "dim": self.dim,
            "settings": self.settings.to_json(),
            "extra": self.extra,
            "sources": self.sources,
            "languages": self._languages,
            "shards": [shard.to_json() for shard in self._shards],
            "current": current,
        }

    def _write_state(self) -> None:
        write_json(self.partial / BUILD_STATE_FILE, self._state())

    def _checkpoint(self) -> None:
        if self._spill is not None:
            self._spill.sync()
        self._write_state()
        self._last_checkpoint = time.monotonic()

    def _resume(self) -> None:
        path = self.partial / BUILD_STATE_FILE
        state = read_json(path)
        if state.get("format") != _BUILD_STATE_FORMAT:
            raise ArtifactError(f"{path}: not a mel index build state")
        for name, mine in (("dim", self.dim), ("settings", self.settings.to_json()), ("extra", self.extra)):
            if state.get(name) != mine:
                raise ArtifactError(
                    f"{self.partial}: the unfinished build used a different {name}; "
                    "build again without resuming to start over"
                )
        recorded = state.get("sources") or {}
        for name in sorted(set(recorded) | set(self.sources)):
            change = fingerprint_change(name, recorded.get(name), self.sources.get(name, {}))
            if change:
                raise ArtifactError(f"{self.partial}: cannot resume: {change}; "
                                    "build again without --resume to start over")
        self._languages = list(state["languages"])
        self._shards = []
        for data in state["shards"]:
            shard = ShardRecord.from_json(data)
            if not files_match(self.partial / shard.name, shard.files):
                break  # this shard and everything after it is rebuilt
            self._shards.append(shard)
        self.reused_shards = len(self._shards)
        current: dict = state.get("current") or {}
        keep_current = (
            bool(current)
            and len(self._shards) == len(state["shards"])
            and current["name"] == shard_name(len(self._shards))
        )
        keep = {shard.name for shard in self._shards}
        if keep_current:
            keep.add(current["name"])
        for child in self.partial.iterdir():  # unfinished shards, ScaNN logs, temporary files
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)
            elif child.is_file() and child.name != BUILD_STATE_FILE:
                child.unlink()
        for shard in self._shards:  # leftovers of a shard recorded just before a stop
            folder = self.partial / shard.name
            for path in [p for p in folder.rglob("*") if p.is_file()]:
                if path.relative_to(folder).as_posix() not in shard.files:
                    path.unlink()
        if keep_current:
            folder = self.partial / current["name"]
            rows = min(int(current["rows"]), ShardSpill.rows_on_disk(folder, self.dim))
            labels = folder / LABELS_SPILL
            labels_ok = labels.is_file() and labels.stat().st_size >= current["labels_bytes"]
            if rows == int(current["rows"]) and labels_ok and rows > 0:
                shutil.rmtree(folder / _SCANN_FOLDER, ignore_errors=True)
                self._spill = ShardSpill(folder, self.dim, rows, int(current["labels_bytes"]))
                self.reused_rows = rows
            else:
                shutil.rmtree(folder)
        self._write_state()

    # -- adding entries ----------------------------------------------------

    def _codes(self, values: str | Sequence[str], n: int, what: str) -> np.ndarray:
        if isinstance(values, str):
            values = [values] * n
        if len(values) != n:
            raise InputError(f"{len(values)} {what} for {n} vectors")
        if what == "kinds":
            try:
                return np.fromiter((self._kind_codes[v] for v in values), dtype=KIND_DTYPE, count=n)
            except KeyError as exc:
                raise InputError(f"unknown entry kind {exc.args[0]!r} (expected one of {', '.join(KINDS)})") from None
        new = [v for v in dict.fromkeys(values) if v not in self._lang_codes]
        for lang in new:
            if not isinstance(lang, str) or not lang:
                raise InputError(f"language {lang!r} is not a non-empty string")
            if len(self._languages) >= _MAX_LANGUAGES:
                raise InputError(f"more than {_MAX_LANGUAGES} languages")
            self._lang_codes[lang] = len(self._languages)
            self._languages.append(lang)
        if new:  # the vocabulary is on disk before any row that uses it
            self._write_state()
        return np.fromiter((self._lang_codes[v] for v in values), dtype=LANG_DTYPE, count=n)

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors of shape {vectors.shape}, expected (n, {self.dim})")
        vectors = vectors.astype(VECTOR_DTYPE, copy=True)
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(~finite | (norms == 0))
        if bad.size:
            raise InputError(f"entry {self.entries_done + int(bad[0])}: vector is zero or not finite")
        # Cosine similarity is the dot product of unit vectors (docs/method.md).
        vectors /= norms[:, None]
        return vectors

    def add(
        self,
        vectors: np.ndarray,
        qids: Sequence[str | int] | np.ndarray,
        kinds: str | Sequence[str],
        langs: str | Sequence[str],
        labels: Sequence[str | None],
    ) -> None:
        """Append entries; `kinds`/`langs` may be one value for the whole batch."""
        if self._closed:
            raise RuntimeError("IndexWriter is closed")
        vectors = self._check_vectors(vectors)
        n = len(vectors)
        try:
            qid_array = parse_qids(qids)
        except RecordError as exc:
            raise InputError(str(exc)) from None
        if len(qid_array) != n or len(labels) != n:
            raise InputError(f"{len(qid_array)} QIDs and {len(labels)} labels for {n} vectors")
        kind_codes = self._codes(kinds, n, "kinds")
        lang_codes = self._codes(langs, n, "languages")
        label_list = ["" if label is None else label for label in labels]
        if not all(isinstance(label, str) for label in label_list):
            raise InputError("labels must be strings")
        start = 0
        while start < n:
            if self._spill is None:
                self._spill = ShardSpill(self.partial / shard_name(len(self._shards)), self.dim)
            stop = min(n, start + self.settings.shard_size - self._spill.rows)
            self._spill.append(
                vectors[start:stop], qid_array[start:stop], kind_codes[start:stop],
                lang_codes[start:stop], label_list[start:stop],
            )  # fmt: skip
            self._progress.advance(stop - start)
            start = stop
            if self._spill.rows >= self.settings.shard_size:
                self._finish_shard()
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self._checkpoint()

    def add_batch(self, batch: EntryBatch) -> None:
        self.add(batch.vectors, batch.qids, batch.kinds, batch.langs, batch.labels)

    # -- finishing ---------------------------------------------------------

    def _status(self, text: str) -> None:
        self._progress.status(text)

    def _finish_shard(self) -> None:
        spill = self._spill
        assert spill is not None
        folder, rows = spill.folder, spill.rows
        spill.close()
        self._write_state()  # all rows are synced: a stop from here on resumes at the ScaNN build
        config = shard_search_config(rows, self.settings)
        vectors_file = VECTORS_FILE
        if config.uses_scann:
            self._status(f"{folder.name}: training ScaNN ({config.algorithm.replace('_', ' ')})")
            searcher = build_scann_searcher(
                folder / VECTORS_FILE, rows, config, self.settings.training_threads, self.partial,
                seed=self.first_shard + len(self._shards),
            )  # fmt: skip
            self._status(f"{folder.name}: saving ScaNN searcher")
            staging = folder / (_SCANN_FOLDER + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            save_scann_searcher(searcher, staging)
            del searcher
            # Search results are ScaNN's datapoint numbers: they must be our
            # row numbers. ScaNN's float32 copy (kept for reordering) shows
            # its order; once it is checked equal, it is the only vector copy.
            if not same_npy_rows(staging / "dataset.npy", folder / VECTORS_FILE):
                raise ArtifactError(f"{staging}/dataset.npy: ScaNN stored the vectors in another order than given")
            os.replace(staging, folder / _SCANN_FOLDER)
            vectors_file = f"{_SCANN_FOLDER}/dataset.npy"
        self._status(f"{folder.name}: checksums")
        skip = {LABELS_SPILL} | ({VECTORS_FILE} if vectors_file != VECTORS_FILE else set())
        record = ShardRecord(
            name=folder.name,
            first_entry=sum(shard.entries for shard in self._shards),
            entries=rows,
            vectors=vectors_file,
            search=config,
            counts=_shard_counts(folder, rows, self._languages),
            files=file_records(folder, skip),
        )
        self._shards.append(record)
        self._spill = None
        self._write_state()
        for name in skip:
            (folder / name).unlink(missing_ok=True)
        self._status("indexing")

    def close(self, late_extra: dict | None = None) -> IndexManifest:
        """Finish the last shard, write the manifest and move the index into place.

        `late_extra` adds manifest fields known only at the end (what a reader
        skipped); unlike `extra`, they are not compared when a build resumes.
        """
        if self._closed:
            return self.manifest
        try:
            if self._spill is not None and self._spill.rows > 0:
                self._finish_shard()
            if not self._shards:
                raise NoEntries("no entries were added: an index needs at least one entry")
            manifest = write_index_manifest(self.partial, self._shards, self._languages, dim=self.dim,
                                            settings=self.settings,
                                            extra={**self.extra, **check_extra(late_extra or {})})
            (self.partial / BUILD_STATE_FILE).unlink()
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self.manifest = manifest
        self._closed = True
        self._stop_progress()
        return manifest

    def _move_into_place(self) -> None:
        if self.folder.exists():
            if not self.force:
                raise ArtifactError(f"{self.folder} already exists (use --force to replace it)")
        replace_folder(self.partial, self.folder)

    def abort(self) -> None:
        """Stop without finishing: keep what is on disk for a resumed build."""
        if self._closed:
            return
        self._closed = True
        if self._spill is not None:
            try:
                self._checkpoint()
            finally:
                self._spill.abandon()
        self._stop_progress()

    def _stop_progress(self) -> None:
        self._progress.stop()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_index_manifest(folder: Path, shards: Sequence[ShardRecord], languages: Sequence[str], *, dim: int,
                         settings: IndexSettings, extra: dict) -> IndexManifest:
    """The index-wide files of a folder whose shards are complete: the QID set and the manifest."""
    qids = np.empty(0, dtype=QID_DTYPE)
    for shard in shards:
        qids = np.union1d(qids, load_npy(folder / shard.name / "qids.npy", QID_DTYPE, (shard.entries,)))
    qid_set_path = folder / QID_SET_FILE
    np.save(qid_set_path, qids.astype(QID_DTYPE, copy=False), allow_pickle=False)
    manifest = IndexManifest(
        dim=dim,
        kinds=KINDS,
        languages=tuple(languages),
        counts=IndexCounts.from_shards(list(shards), len(qids)),
        files={QID_SET_FILE: FileRecord(sha256_file(qid_set_path), qid_set_path.stat().st_size)},
        shards=tuple(shards),
        settings=settings,
        tool_versions=tool_versions(),
        command=command_line(),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        extra=dict(extra),
    )
    write_json(folder / MANIFEST_FILE, manifest.to_json())
    return manifest


def build_index(
    folder: str | os.PathLike,
    batches: Callable[[int], Iterable[EntryBatch]],
    *,
    dim: int,
    settings: IndexSettings = IndexSettings(),
    extra: dict | None = None,
    resume: bool = False,
    force: bool = False,
    progress: BuildProgress | None = None,
    total: int | None = None,
    late_extra: Callable[[], dict] | None = None,
    sources: dict[str, dict] | None = None,
) -> IndexManifest:
    """Build an index from `batches(start)`, which yields entries from entry `start` on;
    `late_extra()` gives manifest fields known once every batch is in."""
    writer = IndexWriter(folder, dim, settings=settings, extra=extra, resume=resume, force=force, progress=progress,
                         total=total, sources=sources)
    try:
        for batch in batches(writer.entries_done):
            writer.add_batch(batch)
    except BaseException:
        writer.abort()
        raise
    return writer.close(late_extra() if late_extra else None)
