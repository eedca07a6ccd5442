"""Knowledge-base sources: mel KB JSON Lines, DaMuEL parts, and training mentions from either.

- A mel KB file is JSON Lines (optionally compressed), one entity a line:
  {"qid": "Q90", "lang": "en", "label": "Paris", "description": "...", "aliases": [...]}.
- DaMuEL language parts are read by `mel.damuel`.
- mel documents with gold QIDs give TrainingMention records.

`read_kb` gives the entities of any mix of these; `read_training_mentions` the
training mentions. Malformed lines are skipped and counted in a `SkipReport`
(which raises at the first one when strict).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from mel.damuel import (
    WIKI_ORIGINS,
    DamuelPart,
    choose_description_languages,
    find_damuel_parts,
    is_damuel_part,
    qid_records,
    selected_entities,
)
from mel.documents import BadRecord, read_documents
from mel.errors import InputError, RecordError
from mel.records import KBEntity, TrainingMention
from mel.skips import SkipReport
from mel.streams import display_name


class JsonlKB:
    """A mel KB JSON Lines file (optionally compressed, or "-")."""

    def __init__(self, path: str | os.PathLike, default_lang: str | None = None):
        self.path = path
        self.default_lang = default_lang

    def __repr__(self) -> str:
        return f"JsonlKB({str(self.path)!r})"

    def entities(
        self,
        *,
        report: SkipReport | None = None,
        langs: Collection[str] | None = None,
        require_page: bool = False,
        limit: int | None = None,
    ) -> Iterator[KBEntity]:
        report = report if report is not None else SkipReport()
        yield from selected_entities(self._parsed(report, langs), report, require_page, limit)

    def _parsed(self, report: SkipReport, langs: Collection[str] | None) -> Iterator[KBEntity]:
        for location, obj in qid_records(self.path, report):
            try:
                entity = KBEntity.from_json(obj, default_lang=self.default_lang)
            except RecordError as exc:
                report.skip(location, str(exc))
                continue
            if langs is not None and entity.lang not in langs:
                report.filter(f"entity in language {entity.lang!r} (not selected)")
                continue
            yield entity


def open_kb(path: str | os.PathLike, lang: str | None = None) -> DamuelPart | JsonlKB:
    """A DaMuEL language folder or a mel KB file, decided by what `path` is.

    `lang` is the part's language (DaMuEL) or the default for lines without
    "lang" (JSON Lines).
    """
    if str(path) != "-" and Path(path).is_dir():
        if not is_damuel_part(path):
            raise InputError(f"{path}: a folder without part-* files (not a DaMuEL language part)")
        return DamuelPart(path, lang)
    if str(path) != "-" and not Path(path).exists():
        raise InputError(f"{path}: not found")
    return JsonlKB(path, default_lang=lang)


def training_mentions_from_documents(
    path: str | os.PathLike,
    *,
    report: SkipReport | None = None,
    default_lang: str | None = None,
) -> Iterator[TrainingMention]:
    """Mentions with a gold QID from mel documents ("training contexts as KB")."""
    report = report if report is not None else SkipReport()
    name = display_name(path)
    for item in read_documents(path):
        if isinstance(item, BadRecord):
            report.skip(f"{name}:{item.line_no}", item.reason)
            continue
        for mention in item.mentions:
            if mention.gold_qid is None:
                report.filter("document mention without a gold qid")
                continue
            yield TrainingMention(
                qid=mention.gold_qid,
                lang=item.lang or default_lang,
                text=item.text,
                start=mention.start,
                end=mention.end,
                origin="documents",
                source=f"{name}:{item.line_no}",
            )


def read_training_mentions(
    paths: Sequence[str | os.PathLike],
    *,
    langs: Collection[str] | None = None,
    origins: Collection[str] | None = WIKI_ORIGINS,
    limit: int | None = None,
    report: SkipReport | None = None,
) -> Iterator[TrainingMention]:
    """Training mentions from DaMuEL parts or root folders (their links) and
    from mel document files (their mentions with gold QIDs)."""
    report = report if report is not None else SkipReport()
    sources: list[Iterator[TrainingMention]] = []
    for path in paths:
        if str(path) != "-" and Path(path).is_dir():
            for part in find_damuel_parts(path, langs):
                sources.append(part.training_mentions(report=report, origins=origins))
        else:
            sources.append(training_mentions_from_documents(path, report=report))
    produced = 0
    for source in sources:
        for mention in source:
            if limit is not None and produced >= limit:
                return
            if langs is not None and mention.lang not in langs:
                report.filter(f"training mention in language {mention.lang!r} (not selected)")
                continue
            produced += 1
            yield mention


def read_kb(
    paths: Sequence[str | os.PathLike],
    *,
    langs: Collection[str] | None = None,
    target_lang: str | None = None,
    require_page: bool = False,
    limit: int | None = None,
    report: SkipReport | None = None,
    origins: Collection[str] | None = WIKI_ORIGINS,
    keep_page_text: bool = False,
) -> Iterator[KBEntity]:
    """Entities from any mix of DaMuEL parts, DaMuEL root folders and mel KB files.

    With one DaMuEL part the part is read as is. With several, each entity
    comes once, from the language `choose_description_languages` picks; this
    reads the parts twice (counting, then reading). mel KB files follow,
    filtered by `langs` on their "lang" field.
    """
    report = report if report is not None else SkipReport()
    parts: list[DamuelPart] = []
    files: list[JsonlKB] = []
    for path in paths:
        if str(path) != "-" and Path(path).is_dir():
            found = find_damuel_parts(path, langs)
            if not found:
                report.filter(f"DaMuEL part {str(path)!r} (language not selected)")
            parts.extend(found)
        else:
            source = open_kb(path)
            assert isinstance(source, JsonlKB)
            files.append(source)
    produced = 0

    def remaining() -> int | None:
        return None if limit is None else limit - produced

    if len(parts) == 1:
        for entity in parts[0].entities(
            report=report, require_page=require_page, limit=limit, keep_page_text=keep_page_text
        ):
            produced += 1
            yield entity
    elif parts:
        choice = choose_description_languages(
            parts, target_lang, report=report, origins=origins, require_page=require_page
        )
        scratch = SkipReport()  # the first pass already reported every bad line
        for index, part in enumerate(parts):
            for entity in part.entities(
                report=scratch, require_page=require_page, keep_page_text=keep_page_text
            ):
                if limit is not None and produced >= limit:
                    return
                if choice.index_of(entity.qid) != index:
                    report.filter("entity described in another language")
                    continue
                produced += 1
                yield entity
    for source in files:
        if limit is not None and produced >= limit:
            return
        for entity in source.entities(
            report=report, langs=langs, require_page=require_page, limit=remaining()
        ):
            produced += 1
            yield entity

