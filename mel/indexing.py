"""Building an index of a knowledge base: KB sources -> entry texts -> vectors -> shards.

Entry kinds ("views", docs/method.md):
- description: `[M] label [M] description`, encoded as an entity;
- context: a training mention in its window with `[M]` markers, encoded exactly
  like a query mention (the thesis's "training contexts as KB");
- label: an entity label or alias alone, encoded like a mention string (for the
  labels and OLPEAT baselines, queried with the mention string only); label
  entries come from KB labels and aliases, or from an alias table's strings
  (one entry per (alias, QID) pair, the alias's QIDs most linked first: OLPEAT).
Description and context entries are queried with mentions in context; label
entries with mention strings, so one index never mixes the two.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mel.aliases import AliasSettings, AliasTable, build_alias_table, build_name_table
from mel.artifacts import (
    cannot_write,
    command_line,
    fingerprint,
    folder_size,
    replace_folder,
    sha256_file,
    tool_versions,
    write_json,
)
from mel.damuel import WIKI_ORIGINS
from mel.encoding import Encoder
from mel.errors import ArtifactError, InputError, ModelError
from mel.indexes.builder import BuildProgress, EntryBatch, IndexWriter, NoEntries, partial_folder
from mel.indexes.manifest import KINDS, MANIFEST_FILE, QUERY_ENCODING_OF_KIND, read_manifest
from mel.indexes.settings import IndexSettings
from mel.indexes.verify import VerifyReport, info, verify
from mel.initials import build_initials_table
from mel.kb import read_kb, read_training_mentions
from mel.linker.folder import FORMAT as LINKER_FORMAT
from mel.linker.folder import (
    RERANKER_FILE,
    VIEWS,
    is_linker_index,
    read_linker_manifest,
    table_path,
    view_path,
)
from mel.mentions import MentionSpan
from mel.model_cache import resolve_model
from mel.models import ModelFolder
from mel.qids import qid_to_str
from mel.retrieval import model_matches, recorded_identity
from mel.skips import SkipReport


@dataclass(frozen=True)
class PendingEntry:
    """An entry before encoding: what to encode, and the row it becomes."""

    kind: str
    qid: str
    lang: str
    label: str
    text: str = ""  # description (description kind) or the string (label kind)
    span: MentionSpan | None = None  # context kind


@dataclass
class KBSelection:
    """Which KB records become entries (the `mel index build` source options)."""

    kb: Sequence[str] = ()
    links: Sequence[str] = ()  # training mentions (DaMuEL links, gold mentions): context entries
    aliases: Sequence[str] = ()  # alias table folders (mel alias build): label entries
    kinds: Sequence[str] = ("description",)
    langs: Sequence[str] | None = None
    target_lang: str | None = None
    require_page: bool = False
    limit: int | None = None
    contexts_per_qid: int | None = None
    all_origins: bool = False
    report: SkipReport = field(default_factory=SkipReport)


def pending_entries(selection: KBSelection) -> Iterator[PendingEntry]:
    """Every entry of the selection, in a fixed order (so a resumed build can skip ahead)."""
    langs = set(selection.langs) if selection.langs else None
    if selection.kb and ("description" in selection.kinds or "label" in selection.kinds):
        for entity in read_kb(selection.kb, langs=langs, target_lang=selection.target_lang,
                              require_page=selection.require_page, limit=selection.limit,
                              report=selection.report):
            if "description" in selection.kinds:
                yield PendingEntry("description", entity.qid, entity.lang, entity.label, entity.description)
            if "label" in selection.kinds:
                for string in dict.fromkeys(s.strip() for s in (entity.label, *entity.aliases)):
                    if string:
                        yield PendingEntry("label", entity.qid, entity.lang, string, string)
    if "label" in selection.kinds:
        for folder in selection.aliases:
            yield from alias_entries(folder)
    if "context" in selection.kinds:
        per_qid: dict[str, int] = {}
        origins = None if selection.all_origins else WIKI_ORIGINS
        for mention in read_training_mentions(selection.links, langs=langs, origins=origins,
                                              report=selection.report):
            if selection.contexts_per_qid is not None:
                seen = per_qid.get(mention.qid, 0)
                if seen >= selection.contexts_per_qid:
                    selection.report.filter("training context over the per-QID cap")
                    continue
                per_qid[mention.qid] = seen + 1
            yield PendingEntry("context", mention.qid, mention.lang or "und", mention.mention,
                               span=MentionSpan(mention.text, mention.start, mention.end))


def alias_entries(folder: str) -> Iterator[PendingEntry]:
    """A label entry per (alias, QID) pair of an alias table, in table order.

    The entries' language is the table's when it has one (an OLAT), else "mul".
    """
    table = AliasTable.open(folder)
    langs = table.languages
    lang = langs[0] if len(langs) == 1 else "mul"
    for row in range(len(table)):
        alias = table.alias(row)
        for qid in table.qids_of(row).tolist():
            yield PendingEntry("label", qid_to_str(qid), lang, alias, alias)


def encode_entries(encoder: Encoder, entries: Sequence[PendingEntry]) -> EntryBatch:
    """One batch of entries -> vectors, row for row (identical inputs are encoded once)."""
    sequences: list[list[int]] = [[] for _ in entries]
    by_kind: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        by_kind.setdefault(entry.kind, []).append(i)
    tokens = encoder.tokens
    for kind, rows in by_kind.items():
        if kind == "description":
            ids = tokens.entities([entries[i].label for i in rows], [entries[i].text for i in rows])
        elif kind == "label":
            ids = tokens.strings([entries[i].text for i in rows], role="mention")
        else:
            spans = [entries[i].span for i in rows]
            ids = tokens.mentions([span for span in spans if span is not None], role="mention")
            assert len(ids) == len(rows), "context entries carry their span"
        for i, seq in zip(rows, ids):
            sequences[i] = seq
    # An alias with several QIDs gives identical inputs: encode each distinct input once.
    distinct: dict[tuple[int, ...], int] = {}
    rows_of = [distinct.setdefault(tuple(seq), len(distinct)) for seq in sequences]
    vectors = encoder.encode_ids([list(seq) for seq in distinct])[rows_of] if len(distinct) < len(sequences) \
        else encoder.encode_ids(sequences)
    return EntryBatch(vectors=vectors, qids=[e.qid for e in entries], kinds=[e.kind for e in entries],
                      langs=[e.lang for e in entries], labels=[e.label for e in entries])


def model_record(encoder: Encoder) -> dict:
    manifest = encoder.manifest
    return {"identity": encoder.identity, "checksum": manifest.checksum, "source": manifest.source,
            "path": str(Path(encoder.model.path).resolve()), "dim": manifest.dim, "precision": encoder.precision,
            "pooling": manifest.pooling}


def view_kinds(kinds: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The views the kinds make: the string view (label entries) and the context view
    (description and context entries), each queried its own way."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown entry kind(s) {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    views: dict[str, tuple[str, ...]] = {}
    for view, encoding in VIEWS.items():
        chosen = tuple(k for k in dict.fromkeys(kinds) if QUERY_ENCODING_OF_KIND[k] == encoding)
        if chosen:
            views[view] = chosen
    return views


def check_selection(selection: KBSelection, kinds: Sequence[str]) -> None:
    """The checks that the selection makes a valid index (its sources give the kinds asked for)."""
    if "context" in kinds and not selection.links:
        raise InputError("--kinds context needs --links (DaMuEL parts or mel documents with gold qids)")
    if "description" in kinds and not selection.kb:
        raise InputError("--kb is required for description entries")
    if "label" in kinds and not (selection.kb or selection.aliases):
        raise InputError("label entries need --kb (entity labels and aliases) or --aliases (an alias table)")
    if selection.aliases and "label" not in kinds:
        raise InputError("--aliases gives label entries: use --kinds label")


class _ViewProgress(BuildProgress):
    """One view's writer reporting into the build's progress (one bar for all views)."""

    def __init__(self, outer: BuildProgress, view: str):
        self.outer, self.view = outer, view

    def advance(self, entries: int) -> None:
        self.outer.advance(entries)

    def status(self, text: str) -> None:
        self.outer.status(f"{self.view} view: {text}")

    def note(self, text: str) -> None:
        self.outer.note(text)


def build_kb_index(out: str | Path, selection: KBSelection, encoder: Encoder, *, settings: IndexSettings,
                   resume: bool = False, force: bool = False, progress: BuildProgress | None = None) -> dict:
    """`mel index build`: a linker index (docs/formats.md) of the selected KB at `out`.

    The views are filled in one pass over the KB (each view's entries in their own
    sharded index, resumable); then the KB's name table and, from training links, the
    alias table; then the manifest. The build happens in a hidden folder renamed into
    place at the end. Returns the manifest.
    """
    kinds = tuple(dict.fromkeys(selection.kinds))
    views = view_kinds(kinds)
    check_selection(selection, kinds)
    out = Path(out)
    if out.exists() and not force:
        raise ArtifactError(f"{out} already exists (use --force to replace it)")
    progress = progress or BuildProgress()
    partial = partial_folder(out)
    if partial.exists() and not resume:
        progress.note(f"removed an unfinished build at {partial}")
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(out, exc) from None
    common = common_record(selection, encoder)
    # Fingerprints of the sources (sizes, times, content hashes): a resume refuses changed ones.
    sources = {f"--{option} {path}": fingerprint(path)
               for option, paths in (("kb", selection.kb), ("links", selection.links)) for path in paths}
    writers: dict[str, IndexWriter] = {}
    try:
        for view, view_kinds_ in views.items():
            folder = view_path(partial, view)
            if (folder / MANIFEST_FILE).is_file():
                continue  # finished before an interruption
            writers[view] = IndexWriter(folder, encoder.dim, settings=settings, resume=resume, force=True,
                                        extra=view_extra(common, view, view_kinds_),
                                        progress=_ViewProgress(progress, view), sources=sources)
        progress.start(sum(w.entries_done for w in writers.values()), None)
        _fill_views(writers, views, selection, encoder, settings.shard_size)
        built = [view for view in views if view not in writers]
        empty = []
        for view, writer in writers.items():
            try:
                writer.close({"skipped": selection.report.to_json()})
                built.append(view)
            except NoEntries:
                empty.append(view)
        if not built:
            raise NoEntries("no entries")
        for view in empty:
            progress.note(f"the {view} view got no entries (kinds {', '.join(views[view])}); left out")
        tables = build_tables(partial, selection, progress)
        manifest = write_linker_manifest(partial, [v for v in views if v in built], tables, common,
                                         selection.report.to_json())
        replace_folder(partial, out)
    except NoEntries:
        shutil.rmtree(partial, ignore_errors=True)
        raise no_entries(selection) from None
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        progress.stop()
    return manifest


def no_entries(selection: KBSelection) -> InputError:
    return InputError(f"no entries: every KB record was skipped or filtered out ({selection.report.summary()})")


def view_extra(common: dict, view: str, kinds: Sequence[str]) -> dict:
    """The caller fields of a view's manifest (before what the reader skipped is known)."""
    return {**common, "query_encoding": VIEWS[view], "entry_kinds": list(kinds)}


def _fill_views(writers: dict[str, IndexWriter], views: dict[str, tuple[str, ...]], selection: KBSelection,
                encoder: Encoder, shard_size: int) -> None:
    """One pass over the entries: each goes to its view's writer, batched; a resumed view skips what it has.
    No batch spans two shards of a view, so that a shard's vectors are the same whether one process builds
    the index or each shard is built apart (`mel.index_parts`)."""
    view_of = {kind: view for view, kinds in views.items() for kind in kinds}
    seen = dict.fromkeys(writers, 0)
    batches: dict[str, list[PendingEntry]] = {view: [] for view in writers}
    if not writers:
        for _ in pending_entries(selection):  # still read the sources through, for the report
            pass
        return
    for entry in pending_entries(selection):
        view = view_of[entry.kind]
        if view not in writers:
            continue
        seen[view] += 1
        if seen[view] <= writers[view].entries_done:
            continue
        batch = batches[view]
        if batch and (seen[view] - 1) % shard_size == 0:
            writers[view].add_batch(encode_entries(encoder, batch))
            batch = batches[view] = []
        batch.append(entry)
        if len(batch) == encoder.group_size:
            writers[view].add_batch(encode_entries(encoder, batch))
            batches[view] = []
    for view, batch in batches.items():
        if batch:
            writers[view].add_batch(encode_entries(encoder, batch))


def build_tables(partial: Path, selection: KBSelection, progress: BuildProgress) -> list[str]:
    """The name and initials tables (from --kb) and the alias table (from --links, or a copy of --aliases)."""
    tables = []
    if selection.kb:
        folder = table_path(partial, "names")
        if not (folder / MANIFEST_FILE).is_file():
            progress.status("name table")
            langs = set(selection.langs) if selection.langs else None
            entities = read_kb(selection.kb, langs=langs, target_lang=selection.target_lang,
                               require_page=selection.require_page, limit=selection.limit,
                               report=SkipReport())  # the views' pass already reported every bad line
            build_name_table(folder, entities, source={"kb": [str(p) for p in selection.kb]}, force=True)
        tables.append("names")
        initials = table_path(partial, "initials")
        if not (initials / MANIFEST_FILE).is_file():
            progress.status("initials table")
            build_initials_table(initials, AliasTable.open(folder), force=True)
        tables.append("initials")
    if selection.links or selection.aliases:
        folder = table_path(partial, "aliases")
        if not (folder / MANIFEST_FILE).is_file():
            progress.status("alias table")
            if selection.links:
                build_alias_table(folder, list(selection.links),
                                  AliasSettings(all_origins=selection.all_origins, loose=True,
                                                langs=tuple(selection.langs) if selection.langs else None),
                                  report=SkipReport(), force=True)
            else:
                folder.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(selection.aliases[0], folder)
        tables.append("aliases")
    return tables


def common_record(selection: KBSelection, encoder: Encoder) -> dict:
    """The fields every manifest of the index shares: model, sources, selection."""
    return {
        "model": model_record(encoder),
        "sources": {"kb": [str(p) for p in selection.kb], "contexts": [str(p) for p in selection.links],
                    "aliases": [_alias_table_record(folder) for folder in selection.aliases]},
        "selection": {"langs": list(selection.langs) if selection.langs else None,
                      "target_lang": selection.target_lang, "require_page": selection.require_page,
                      "limit": selection.limit, "contexts_per_qid": selection.contexts_per_qid,
                      "origins": "all" if selection.all_origins else list(WIKI_ORIGINS)},
        "max_length": encoder.tokens.max_length,
    }


def write_linker_manifest(partial: Path, views: list[str], tables: list[str], common: dict,
                          skipped: dict) -> dict:
    """The linker index's manifest over its built views and tables."""
    parts = {f"views/{v}": sha256_file(view_path(partial, v) / MANIFEST_FILE) for v in views}
    parts.update({f"tables/{t}": sha256_file(table_path(partial, t) / MANIFEST_FILE) for t in tables})
    counts = {f"views/{v}": read_manifest(view_path(partial, v)).counts.to_json() for v in views}
    counts.update({f"tables/{t}": AliasTable.open(table_path(partial, t)).manifest["counts"] for t in tables})
    manifest = {
        "format": LINKER_FORMAT, "views": views, "tables": tables, "parts": parts, "reranker": None,
        **common, "counts": counts, "skipped": skipped,
        "tool_versions": tool_versions(), "command": command_line(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_json(partial / MANIFEST_FILE, manifest)
    return manifest


def _alias_table_record(folder: str) -> dict:
    table = AliasTable.open(folder)
    return {"path": str(Path(folder).resolve()), "manifest_sha256": table.checksum,
            "cased": table.cased, "languages": table.languages, "pairs": table.manifest["counts"]["pairs"]}


def describe_index(folder: str | Path) -> dict:
    """`mel index info --json`: the index's manifest facts, per view and table for a linker index."""
    folder = Path(folder)
    if not is_linker_index(folder):
        return info(folder).to_json()
    manifest = read_linker_manifest(folder)
    data = manifest.data
    return {"folder": str(folder), "format": data["format"], "views": list(manifest.views),
            "model": data.get("model"), "reranker": data.get("reranker"),
            "view_info": {view: info(view_path(folder, view)).to_json() for view in manifest.views},
            "tables": {table: AliasTable.open(table_path(folder, table)).describe() for table in manifest.tables},
            "size_bytes": folder_size(folder), "created": data.get("created"), "command": data.get("command"),
            "tool_versions": data.get("tool_versions")}


def verify_index(folder: str | Path, *, sample: int = 1000, min_recall: float | None = None,
                 model: str | None = None) -> VerifyReport:
    """`mel index verify`: every file's checksum and ScaNN recall (mel.indexes.verify) in every view,
    the tables, the reranker and the parts' ties to the manifest; plus the model match."""
    folder = Path(folder)
    if not is_linker_index(folder):
        return _with_model_check(verify(folder, sample=sample, min_recall=min_recall), folder, model)
    manifest = read_linker_manifest(folder, check_parts=False)
    problems: list[str] = []
    reports = []
    for view in manifest.views:
        try:
            reports.append(verify(view_path(folder, view), sample=sample, min_recall=min_recall))
        except ArtifactError as exc:
            problems.append(str(exc))
    files = sum(r.files_checked for r in reports)
    size = sum(r.bytes_checked for r in reports)
    problems += [p for r in reports for p in r.problems]
    for name, digest in manifest.parts.items():
        part = folder / name / MANIFEST_FILE
        if part.is_file() and sha256_file(part) != digest:
            problems.append(f"{part}: checksum mismatch with {folder / MANIFEST_FILE} (a part was replaced)")
    for table in manifest.tables:
        try:
            found = AliasTable.open(table_path(folder, table))
        except ArtifactError as exc:
            problems.append(str(exc))
            continue
        for name, record in found.manifest.get("files", {}).items():
            path = found.folder / name
            files += 1
            size += path.stat().st_size
            if sha256_file(path) != record["sha256"]:
                problems.append(f"{path}: checksum mismatch (the file was changed or damaged)")
    if manifest.reranker_sha256 is not None:
        path = folder / RERANKER_FILE
        if not path.is_file() or sha256_file(path) != manifest.reranker_sha256:
            problems.append(f"{path}: missing or checksum mismatch (tune again)")
    recalls = [r.recall_at_10 for r in reports if r.recall_at_10 is not None]
    report = VerifyReport(
        folder=str(folder), files_checked=files, bytes_checked=size, problems=tuple(problems),
        sample=max((r.sample for r in reports), default=0), recall_at_10=min(recalls) if recalls else None,
        exact_only=all(r.exact_only for r in reports), model_checksum=recorded_identity(manifest.model))
    return _with_model_check(report, folder, model, manifest.model)


def _with_model_check(report: VerifyReport, folder: Path, model: str | None,
                      record: dict | None = None) -> VerifyReport:
    """The report, with the model compared to the index's recorded identity when the model can be found."""
    record = record if record is not None else (read_manifest(folder).model or {})
    found: ModelFolder | None
    try:
        if model is not None:
            found = resolve_model(model)
        else:
            path = record.get("path")
            found = ModelFolder.open(path) if path and Path(path).is_dir() else None
    except ModelError:
        found = None
    matches = None if found is None else model_matches(record, found)
    if found is None or matches is None:
        return report
    problems = report.problems if matches else report.problems + (
        f"{found.path}: model {found.identity[:12]}… differs from the index's "
        f"{str(recorded_identity(record))[:12]}…",)
    return dataclasses.replace(report, model_ok=matches, problems=problems)
