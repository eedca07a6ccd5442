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

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mel.artifacts import fingerprint
from mel.damuel import WIKI_ORIGINS
from mel.encoding import Encoder
from mel.errors import InputError
from mel.indexes.builder import BuildProgress, EntryBatch, NoEntries, build_index, partial_folder
from mel.indexes.manifest import KINDS, QUERY_ENCODING_OF_KIND, IndexManifest
from mel.indexes.settings import IndexSettings
from mel.kb import read_kb, read_training_mentions
from mel.mentions import MentionSpan
from mel.qids import qid_to_str
from mel.streams import SkipReport


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


def query_encoding(kinds: Sequence[str]) -> str:
    """How queries must be encoded for these kinds; mixing the two is refused."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"unknown entry kind(s) {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    encodings = {QUERY_ENCODING_OF_KIND[k] for k in kinds}
    if len(encodings) > 1:
        raise InputError("label entries are queried with the mention string alone, description and context "
                         "entries with the mention in context: build them as two indexes")
    return encodings.pop()


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
                        yield PendingEntry("label", entity.qid, entity.lang, entity.label, string)
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
    from mel.aliases import AliasTable

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


def batched_entries(selection: KBSelection, encoder: Encoder, start: int, batch_size: int) -> Iterator[EntryBatch]:
    """Encoded batches from entry `start` on (earlier entries are read but not encoded, so that
    the reader's report covers the whole source)."""
    batch: list[PendingEntry] = []
    for number, entry in enumerate(pending_entries(selection)):
        if number < start:
            continue
        batch.append(entry)
        if len(batch) == batch_size:
            yield encode_entries(encoder, batch)
            batch = []
    if batch:
        yield encode_entries(encoder, batch)


def model_record(encoder: Encoder) -> dict:
    manifest = encoder.manifest
    return {"identity": encoder.identity, "checksum": manifest.checksum, "source": manifest.source,
            "path": str(Path(encoder.model.path).resolve()), "dim": manifest.dim, "precision": encoder.precision,
            "pooling": manifest.pooling}


def build_kb_index(out: str | Path, selection: KBSelection, encoder: Encoder, *, settings: IndexSettings,
                   resume: bool = False, force: bool = False,
                   progress: BuildProgress | None = None) -> IndexManifest:
    """`mel index build`: encode the selected KB entries into a sharded index at `out`."""
    kinds = tuple(dict.fromkeys(selection.kinds))
    encoding = query_encoding(kinds)
    if "context" in kinds and not selection.links:
        raise InputError("--kinds context needs --links (DaMuEL parts or mel documents with gold qids)")
    if "description" in kinds and not selection.kb:
        raise InputError("--kb is required for description entries")
    if "label" in kinds and not (selection.kb or selection.aliases):
        raise InputError("label entries need --kb (entity labels and aliases) or --aliases (an alias table)")
    if selection.aliases and "label" not in kinds:
        raise InputError("--aliases gives label entries: use --kinds label")
    alias_tables = [_alias_table_record(folder) for folder in selection.aliases]
    extra = {
        "model": model_record(encoder),
        "query_encoding": encoding,
        "sources": {"kb": [str(p) for p in selection.kb], "contexts": [str(p) for p in selection.links],
                    "aliases": alias_tables},
        "selection": {"langs": list(selection.langs) if selection.langs else None,
                      "target_lang": selection.target_lang, "require_page": selection.require_page,
                      "limit": selection.limit, "contexts_per_qid": selection.contexts_per_qid,
                      "origins": "all" if selection.all_origins else list(WIKI_ORIGINS)},
        "max_length": encoder.tokens.max_length,
    }
    # Fingerprints of the sources (sizes, times, content hashes): a resume refuses changed ones.
    sources = {f"--{option} {path}": fingerprint(path)
               for option, paths in (("kb", selection.kb), ("links", selection.links)) for path in paths}
    try:
        return build_index(out, lambda start: batched_entries(selection, encoder, start, encoder.batch_size),
                           dim=encoder.dim, settings=settings, extra=extra, resume=resume, force=force,
                           progress=progress, sources=sources,
                           # What the reader skipped is known only once the KB has been read through.
                           late_extra=lambda: {"skipped": selection.report.to_json()})
    except NoEntries:
        shutil.rmtree(partial_folder(out), ignore_errors=True)
        raise InputError(f"no entries: every KB record was skipped or filtered out "
                         f"({selection.report.summary()})") from None


def _alias_table_record(folder: str) -> dict:
    from mel.aliases import AliasTable

    table = AliasTable.open(folder)
    return {"path": str(Path(folder).resolve()), "manifest_sha256": table.checksum,
            "cased": table.cased, "languages": table.languages, "pairs": table.manifest["counts"]["pairs"]}


def verify_index(folder: str | Path, *, sample: int = 1000, min_recall: float | None = None,
                 model: str | None = None):
    """`mel index verify`: checksums and ScaNN recall (indexes.verify), plus the model match."""
    import dataclasses

    from mel.errors import ModelError
    from mel.indexes.manifest import read_manifest
    from mel.indexes.verify import verify
    from mel.model_cache import resolve_model
    from mel.models import ModelFolder
    from mel.retrieval import model_matches, recorded_identity

    report = verify(folder, sample=sample, min_recall=min_recall)
    record = read_manifest(folder).model or {}
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
