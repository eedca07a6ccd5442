"""Index builds in parts: `mel index build --shard I/N`, `mel index assemble`, and the Ray build's workers.

A linker index (`mel.linker.folder`) holds up to two views, each a sharded index, and the
name and alias tables. The entries of a KB come in a fixed order (`mel.indexing.pending_entries`);
each view takes its own entries, and shard number s of a view holds that view's entries
s·shard_size to (s+1)·shard_size - 1. A part build reads the KB through and embeds only the view
shards it owns, each into a complete one-shard index folder built exactly as the single-process
build builds that shard (the same encoder batches, as no batch spans two shards of a view; the
same ScaNN seed, the shard's number). Shard s of the string view belongs to job s mod N, shard s
of the context view to job (s + 1) mod N (so that job 0 does not get the first shard of both);
the tables are built once, by job 0:

    PARTS/parts.json                     format mel.index-parts.v2: the job (I/N), each view's entry
                                         count and kinds, settings, the manifest fields, what the reader
                                         skipped, what this folder holds
    PARTS/views/VIEW/shard-SSSSS/        shard SSSSS of a view as a one-shard index (`mel index verify`
                                         checks it like any index)
    PARTS/tables/names/, initials/, aliases/  the tables (job 0 only)

`mel index assemble PARTS... -o IDX` checks that the parts are those of one build and hold every
shard of every view and every table exactly once, verifies every file's sha256, and writes the
linker index: each view's shards renumbered into place (language codes mapped to the view's
vocabulary) with its QID set and manifest, the tables, and the index manifest. The result equals
the single-process build of the same KB and settings, shard file for shard file.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mel.aliases import AliasTable
from mel.artifacts import atomic_folder, command_line, read_json, sha256_file, tool_versions, write_json
from mel.encoding import Encoder
from mel.errors import ArtifactError, InputError
from mel.indexes.builder import BuildProgress, IndexWriter, shard_name, write_index_manifest
from mel.indexes.manifest import FileRecord, IndexManifest, ShardRecord, files_match, read_manifest
from mel.indexes.settings import IndexSettings
from mel.indexes.store import LANG_DTYPE, GrowingNpy, load_npy
from mel.indexing import (
    KBSelection,
    PendingEntry,
    build_tables,
    check_selection,
    common_record,
    encode_entries,
    no_entries,
    pending_entries,
    view_extra,
    view_kinds,
    write_linker_manifest,
)
from mel.link_runs import Shard
from mel.linker.folder import VIEWS, table_path, view_path

PARTS_FORMAT = "mel.index-parts.v2"
PARTS_MANIFEST = "parts.json"
VIEW_OFFSET = {view: number for number, view in enumerate(VIEWS)}  # string 0, context 1


def owns(job: Shard, view: str, number: int) -> bool:
    """Whether shard `number` of `view` is job I/N's (see the module docstring)."""
    return (number + VIEW_OFFSET[view]) % job.count == job.index


@dataclass(frozen=True)
class IndexParts:
    """parts.json: which view shards and tables a parts folder holds, and what the parts must agree on."""

    views: dict[str, dict]  # view -> {"kinds": [...], "entries": entries of the whole KB selection}
    tables: tuple[str, ...]  # the tables of the whole build
    dim: int
    settings: dict
    common: dict  # the manifests' shared fields (model, sources, selection, max_length)
    skipped: dict  # what the reader skipped
    held: dict[str, tuple[int, ...]]  # view -> its shard numbers in this folder
    held_tables: tuple[str, ...] = ()
    shard: Shard | None = None  # the job, for --shard I/N
    tool_versions: dict = field(default_factory=dict)
    command: str = ""
    created: str = ""
    format: str = PARTS_FORMAT

    def shards(self, view: str) -> int:
        """Shards of `view` in the whole build."""
        return -(-int(self.views[view]["entries"]) // int(self.settings["shard_size"]))

    def to_json(self) -> dict:
        return {"format": self.format, "shard": self.shard.to_json() if self.shard else None,
                "views": self.views, "tables": list(self.tables), "dim": self.dim,
                "held": {view: list(numbers) for view, numbers in self.held.items()},
                "held_tables": list(self.held_tables), "settings": self.settings, "common": self.common,
                "skipped": self.skipped, "tool_versions": self.tool_versions, "command": self.command,
                "created": self.created}

    @classmethod
    def from_json(cls, data: dict) -> IndexParts:
        return cls(views={str(v): dict(record) for v, record in data["views"].items()},
                   tables=tuple(str(t) for t in data["tables"]), dim=int(data["dim"]),
                   settings=dict(data["settings"]), common=dict(data["common"]), skipped=dict(data["skipped"]),
                   held={str(v): tuple(int(s) for s in numbers) for v, numbers in data["held"].items()},
                   held_tables=tuple(str(t) for t in data.get("held_tables", ())),
                   shard=Shard.from_json(data["shard"]) if data.get("shard") else None,
                   tool_versions=dict(data.get("tool_versions", {})), command=str(data.get("command", "")),
                   created=str(data.get("created", "")), format=str(data["format"]))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def selected_views(selection: KBSelection) -> dict[str, tuple[str, ...]]:
    """The views of the selection's kinds, after the checks that the selection makes a valid index."""
    kinds = tuple(dict.fromkeys(selection.kinds))
    views = view_kinds(kinds)
    check_selection(selection, kinds)
    return views


def selected_tables(selection: KBSelection) -> tuple[str, ...]:
    """The tables a build of the selection writes (as `mel.indexing.build_tables` does)."""
    names = ("names", "initials") if selection.kb else ()
    return names + (("aliases",) if selection.links or selection.aliases else ())


def count_entries(selection: KBSelection) -> dict[str, int]:
    """Each view's entries, the selection read through without encoding (its report is filled)."""
    views = selected_views(selection)
    view_of = {kind: view for view, kinds in views.items() for kind in kinds}
    counts = dict.fromkeys(views, 0)
    for entry in pending_entries(selection):
        counts[view_of[entry.kind]] += 1
    return counts


def build_shards(folder: Path, selection: KBSelection, encoder: Encoder, settings: IndexSettings,
                 owned: Callable[[str, int], bool], *, status: Callable[[str], None] | None = None
                 ) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Read the selection through; embed the view shards `owned(view, s)` says are ours into
    folder/views/VIEW/shard-SSSSS. Returns each view's entry count and the (view, shard) built."""
    views = selected_views(selection)
    common = common_record(selection, encoder)
    view_of = {kind: view for view, kinds in views.items() for kind in kinds}
    size, batch_size = settings.shard_size, encoder.group_size
    counts = dict.fromkeys(views, 0)
    writers: dict[str, IndexWriter] = {}
    batches: dict[str, list[PendingEntry]] = {view: [] for view in views}
    built: list[tuple[str, int]] = []

    def flush(view: str) -> None:
        if batches[view]:
            writers[view].add_batch(encode_entries(encoder, batches[view]))
            batches[view] = []

    try:
        for entry in pending_entries(selection):
            view = view_of[entry.kind]
            number, row = divmod(counts[view], size)
            counts[view] += 1
            if row == 0:
                if view in writers:
                    flush(view)
                    writers.pop(view).close()
                if owned(view, number):
                    if status:
                        status(f"{view} view {shard_name(number)}: embedding")
                    writers[view] = IndexWriter(view_path(folder, view) / shard_name(number), encoder.dim,
                                                settings=settings, extra=view_extra(common, view, views[view]),
                                                first_shard=number, force=True)
                    built.append((view, number))
            if view in writers:
                batches[view].append(entry)
                if len(batches[view]) == batch_size:
                    flush(view)
        for view in list(writers):
            flush(view)
            writers.pop(view).close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    if not any(counts.values()):
        raise no_entries(selection)
    return counts, built


def build_parts(out: str | os.PathLike, selection: KBSelection, encoder: Encoder, settings: IndexSettings,
                job: Shard, *, force: bool = False, status: Callable[[str], None] | None = None) -> IndexParts:
    """`mel index build --shard I/N -o PARTS`: the view shards job I/N owns (and the tables for job 0)."""
    with atomic_folder(out, force=force) as tmp:
        counts, built = build_shards(tmp, selection, encoder, settings, lambda view, s: owns(job, view, s),
                                     status=status)
        tables = build_tables(tmp, selection, BuildProgress()) if job.index == 0 else []
        parts = parts_record(selection, encoder, settings, counts, built, tables, job)
        write_json(tmp / PARTS_MANIFEST, parts.to_json())
    return parts


def parts_record(selection: KBSelection, encoder: Encoder, settings: IndexSettings, counts: dict[str, int],
                 built: Sequence[tuple[str, int]], tables: Sequence[str], job: Shard | None) -> IndexParts:
    if settings.scann:
        from mel.indexes.scann_backend import scann_available

        if not scann_available():  # as IndexWriter records it
            settings = replace(settings, scann=False)
    views = selected_views(selection)
    return IndexParts(views={view: {"kinds": list(kinds), "entries": counts[view]} for view, kinds in views.items()},
                      tables=selected_tables(selection), dim=encoder.dim, settings=settings.to_json(),
                      common=common_record(selection, encoder), skipped=selection.report.to_json(),
                      held={view: tuple(sorted(s for v, s in built if v == view)) for view in views},
                      held_tables=tuple(tables), shard=job, tool_versions=tool_versions(), command=command_line(),
                      created=_now())


def read_parts(folder: str | os.PathLike) -> IndexParts:
    path = Path(folder) / PARTS_MANIFEST
    if not Path(folder).is_dir():
        raise ArtifactError(f"{folder}: parts folder not found")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != PARTS_FORMAT:
        raise ArtifactError(f"{path}: not a mel index parts manifest (expected format {PARTS_FORMAT!r})")
    try:
        return IndexParts.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None


def _comparable(parts: IndexParts) -> dict:
    common = {k: v for k, v in parts.common.items() if k != "model"}
    model = {k: v for k, v in (parts.common.get("model") or {}).items() if k != "path"}
    return {"views": parts.views, "tables": parts.tables, "dim": parts.dim, "settings": parts.settings,
            "common": common, "model": model, "skipped": parts.skipped}


def _checked_shard(folder: Path, view: str, number: int) -> tuple[IndexManifest, ShardRecord]:
    part = view_path(folder, view) / shard_name(number)
    manifest = read_manifest(part)
    if len(manifest.shards) != 1:
        raise ArtifactError(f"{part}: expected a one-shard index, found {len(manifest.shards)} shards")
    record = manifest.shards[0]
    if not files_match(part / record.name, record.files) or not files_match(part, manifest.files):
        raise ArtifactError(f"{part}: checksum mismatch (a file of the part is missing or damaged)")
    return manifest, record


def _checked_table(folder: Path, table: str) -> Path:
    path = table_path(folder, table)
    found = AliasTable.open(path)
    for name, record in found.manifest.get("files", {}).items():
        if sha256_file(path / name) != record["sha256"]:
            raise ArtifactError(f"{path / name}: checksum mismatch (a file of the part is missing or damaged)")
    return path


def _check_jobs(found: list[tuple[Path, IndexParts]]) -> None:
    first_folder, first = found[0]
    for folder, parts in found[1:]:
        if _comparable(parts) != _comparable(first):
            raise InputError(f"{folder}: parts of another build than {first_folder} (KB entries, settings, "
                             "model or sources differ)")
    jobs = [parts.shard for _, parts in found]
    if any(job is not None for job in jobs):
        counts = {job.count if job else None for job in jobs}
        given = sorted(job.index for job in jobs if job is not None)
        count = next(iter(counts))
        if len(counts) != 1 or count is None or given != list(range(count)):
            raise InputError(f"the parts are not the {count} jobs of one --shard I/N build (jobs given: "
                             f"{', '.join(str(job) for job in jobs)})")


def _owners(found: list[tuple[Path, IndexParts]]) -> tuple[dict[tuple[str, int], Path], dict[str, Path]]:
    """Which parts folder holds each view shard and each table; every one exactly once."""
    first = found[0][1]
    shards: dict[tuple[str, int], Path] = {}
    tables: dict[str, Path] = {}
    for folder, parts in found:
        for view, numbers in parts.held.items():
            for number in numbers:
                if (view, number) in shards:
                    raise InputError(f"{view} view shard {number} is in two parts folders: "
                                     f"{shards[view, number]} and {folder}")
                shards[view, number] = folder
        for table in parts.held_tables:
            if table in tables:
                raise InputError(f"the {table} table is in two parts folders: {tables[table]} and {folder}")
            tables[table] = folder
    expected = {(view, number) for view in first.views for number in range(first.shards(view))}
    missing = sorted(expected - set(shards)) + sorted(set(shards) - expected)
    if missing:
        raise InputError("view shards missing from the parts given: "
                         + ", ".join(f"{view} {number}" for view, number in missing))
    if set(tables) != set(first.tables):
        raise InputError(f"tables missing from the parts given: {', '.join(sorted(set(first.tables) - set(tables)))} "
                         "(job 0 builds them)")
    return shards, tables


def assemble_index(folders: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False) -> dict:
    """`mel index assemble PARTS... -o IDX`: see the module docstring. Returns the index manifest."""
    if not folders:
        raise InputError("give at least one parts folder")
    found = [(Path(f), read_parts(f)) for f in folders]
    _check_jobs(found)
    first = found[0][1]
    shard_owner, table_owner = _owners(found)
    views = [view for view in first.views if first.shards(view)]  # a view without entries is left out
    checked = {view: [(shard_owner[view, n], *_checked_shard(shard_owner[view, n], view, n))
                      for n in range(first.shards(view))] for view in views}
    tables = {table: _checked_table(table_owner[table], table) for table in first.tables}
    settings = IndexSettings.from_json(first.settings)
    with atomic_folder(out, force=force) as tmp:
        for view in views:
            extra = {**view_extra(first.common, view, first.views[view]["kinds"]), "skipped": first.skipped}
            _assemble_view(view_path(tmp, view), view, checked[view], settings, first.dim, extra)
        for table, source in tables.items():
            target = table_path(tmp, table)
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(path, target / path.relative_to(source))
        manifest = write_linker_manifest(tmp, views, list(tables), first.common, first.skipped)
    return manifest


def _assemble_view(target_folder: Path, view: str, checked: list[tuple[Path, IndexManifest, ShardRecord]],
                   settings: IndexSettings, dim: int, extra: dict) -> None:
    """One view's index from its one-shard parts, in shard order."""
    languages: list[str] = []
    for _, manifest, _ in checked:
        languages += [lang for lang in manifest.languages if lang not in languages]
    size = settings.shard_size
    shards = []
    for number, (folder, manifest, record) in enumerate(checked):
        source = view_path(folder, view) / shard_name(number) / record.name
        target = target_folder / shard_name(number)
        codes = np.array([languages.index(lang) for lang in manifest.languages], dtype=LANG_DTYPE)
        files = dict(record.files)
        for name in record.files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            if name == "langs.npy":  # codes of the part's vocabulary -> the view's
                local = load_npy(source / name, LANG_DTYPE, (record.entries,))
                table = GrowingNpy(target / name, LANG_DTYPE)
                table.append(codes[local] if len(local) else local)
                table.close()
                files[name] = FileRecord(sha256_file(target / name), (target / name).stat().st_size)
            else:
                _link_or_copy(source / name, target / name)
        shards.append(ShardRecord(name=shard_name(number), first_entry=number * size, entries=record.entries,
                                  vectors=record.vectors, search=record.search, counts=record.counts, files=files))
    write_index_manifest(target_folder, shards, languages, dim=dim, settings=settings, extra=extra)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
