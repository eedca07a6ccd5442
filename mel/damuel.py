"""DaMuEL language parts: entities and their Wikipedia links, streamed.

A DaMuEL language part is a folder of `part-*` files (xz JSON Lines, one entity
a line; docs/formats.md). It gives `KBEntity` records and, from the links of its
Wikipedia pages, `TrainingMention` records (by default only the links Wikipedia
editors placed, origin "wiki"). Everything streams, one line at a time; no part
is ever held whole. Malformed lines are skipped and counted in a `SkipReport`.

With several languages, each entity is described in one language, by one rule
(Botha et al. 2020; `description_language_key`): the target language first, else
the language with the most training mentions of the entity, ties broken by the
language's total training mentions, then by the language code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mel.errors import InputError
from mel.qids import is_qid, qid_to_int
from mel.records import KBEntity, TrainingMention, is_int
from mel.skips import SkipReport
from mel.streams import BadLine, display_name, iter_lines, parse_json_object

# A description keeps this many characters of a page's start: far more than
# the 64 tokens the encoder reads, so the tokenizer, not this cut, truncates.
DESCRIPTION_CHARS = 2048
# Training links used by default: those placed by Wikipedia editors.
WIKI_ORIGINS: tuple[str, ...] = ("wiki",)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def qid_records(path: str | os.PathLike, report: SkipReport) -> Iterator[tuple[str, dict]]:
    """(location "file:line", object) for each JSON object line with a valid "qid"."""
    name = display_name(path)
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        location = f"{name}:{line_no}"
        try:
            obj = parse_json_object(line)
        except BadLine as exc:
            report.skip(location, exc.reason, exc.detail)
            continue
        if "qid" not in obj:
            report.skip(location, "missing field 'qid'")
            continue
        if not is_qid(obj["qid"]):
            report.skip(location, "not a Wikidata item id", repr(obj["qid"]))
            continue
        yield location, obj


_LANG_CODE = re.compile(r"[a-z]{2,3}(-[a-z]+)?")


def language_of_folder(folder: Path) -> str:
    """damuel/es -> "es"; a name such as "damuel_1.0_es" -> its last "_"- or
    "."-separated piece when that looks like a language code; else the whole name."""
    name = folder.resolve().name
    if _LANG_CODE.fullmatch(name):
        return name
    last = re.split(r"[_.]", name)[-1]
    return last if _LANG_CODE.fullmatch(last) else name


def selected_entities(entities: Iterator[KBEntity], report: SkipReport, require_page: bool,
              limit: int | None) -> Iterator[KBEntity]:
    """The `require_page` filter and the `limit`, the same for every KB source
    (lazy: reading stops once `limit` entities are out)."""
    if limit is not None and limit <= 0:
        return
    produced = 0
    for entity in entities:
        if require_page and not entity.has_page:
            report.filter("entity without a Wikipedia page (require_page)")
            continue
        yield entity
        produced += 1
        if limit is not None and produced >= limit:
            return


class DamuelPart:
    """One DaMuEL language part: a folder of `part-*` files.

    The language is the folder's name (damuel/es -> "es") unless given.
    """

    def __init__(self, folder: str | os.PathLike, lang: str | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: not a DaMuEL language folder (not a folder)")
        self.files = sorted(
            (p for p in self.folder.glob("part-*") if p.is_file()), key=_natural_key
        )
        if not self.files:
            raise InputError(f"{self.folder}: no part-* files (expected a DaMuEL language folder)")
        self.lang = lang or language_of_folder(self.folder)

    def __repr__(self) -> str:
        return f"DamuelPart({str(self.folder)!r}, lang={self.lang!r})"

    def records(self, report: SkipReport) -> Iterator[tuple[str, dict]]:
        """Raw (location, object) pairs of every well-formed line."""
        for path in self.files:
            yield from qid_records(path, report)

    def entities(
        self,
        *,
        report: SkipReport | None = None,
        require_page: bool = False,
        limit: int | None = None,
        keep_page_text: bool = False,
    ) -> Iterator[KBEntity]:
        report = report if report is not None else SkipReport()
        parsed = (self.entity_from_record(obj, location, report, keep_page_text)
                  for location, obj in self.records(report))
        yield from selected_entities((e for e in parsed if e is not None), report, require_page, limit)

    def entity_from_record(
        self, obj: dict, location: str, report: SkipReport, keep_page_text: bool = False
    ) -> KBEntity | None:
        wiki = obj.get("wiki")
        if wiki is not None and not isinstance(wiki, dict):
            report.skip(location, "field 'wiki' is not an object")
            return None
        wiki = wiki or {}
        title = wiki.get("title") if isinstance(wiki.get("title"), str) else None
        label = obj.get("label") if isinstance(obj.get("label"), str) else None
        # The Wikidata label first (no disambiguation suffix); the page title when there is none.
        label = label if label and label.strip() else title
        if not label or not label.strip():
            report.skip(location, "empty label")
            return None
        wikidata_description = obj.get("description")
        if not isinstance(wikidata_description, str):
            wikidata_description = None
        page_text = wiki.get("text") if isinstance(wiki.get("text"), str) else None
        if wiki and not page_text:
            report.filter("Wikipedia page with empty text (Wikidata description used)")
        description = (
            page_text[:DESCRIPTION_CHARS].strip() if page_text else (wikidata_description or "")
        )
        aliases = obj.get("aliases")
        if not (isinstance(aliases, list) and all(isinstance(a, str) for a in aliases)):
            aliases = []
        return KBEntity(
            qid=obj["qid"],
            lang=self.lang,
            label=label,
            description=description,
            aliases=tuple(aliases),
            has_page=bool(wiki),
            page_title=title,
            wikidata_description=wikidata_description,
            page_text=page_text if keep_page_text else None,
        )

    def training_mentions(
        self,
        *,
        report: SkipReport | None = None,
        origins: Collection[str] | None = WIKI_ORIGINS,
        limit: int | None = None,
    ) -> Iterator[TrainingMention]:
        """The links of the part's pages as mentions in context.

        `origins` selects links by their "origin" (None: all of them). Link
        token indices are turned into character offsets of the page text.
        """
        report = report if report is not None else SkipReport()
        if limit is not None and limit <= 0:
            return
        produced = 0
        for location, obj in self.records(report):
            for mention in self.links_of_record(obj, location, report, origins):
                yield mention
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def links_of_record(
        self,
        obj: dict,
        location: str,
        report: SkipReport,
        origins: Collection[str] | None = WIKI_ORIGINS,
    ) -> Iterator[TrainingMention]:
        wiki = obj.get("wiki")
        if not isinstance(wiki, dict) or not wiki.get("links"):
            return
        text, tokens, links = wiki.get("text"), wiki.get("tokens"), wiki.get("links")
        if not isinstance(text, str) or not text:
            report.skip(location, "page with links but empty text")
            return
        if not isinstance(tokens, list) or not isinstance(links, list):
            report.skip(location, "page 'tokens' or 'links' is not a list")
            return
        for number, link in enumerate(links, start=1):
            where = f"link {number}"
            if not isinstance(link, dict):
                report.skip(location, "link is not an object", where)
                continue
            qid = link.get("qid")
            if qid is None:
                report.filter("link without a qid")
                continue
            if not is_qid(qid):
                report.skip(location, "link qid is not a Wikidata item id", f"{where}: {qid!r}")
                continue
            origin = link.get("origin")
            if origins is not None and origin not in origins:
                report.filter(f"link with origin {origin!r} (not selected)")
                continue
            span = _link_characters(link, tokens, len(text))
            if isinstance(span, str):
                report.skip(location, span, where)
                continue
            yield TrainingMention(
                qid=qid,
                lang=self.lang,
                text=text,
                start=span[0],
                end=span[1],
                origin=origin,
                source=location,
            )


def _link_characters(link: dict, tokens: list, text_length: int) -> tuple[int, int] | str:
    """Character span of a link from its token indices (end exclusive), or the
    reason it has none."""
    start, end = link.get("start"), link.get("end")
    if not (is_int(start) and is_int(end)):
        return "link token indices are not integers"
    if not 0 <= start < end <= len(tokens):
        return f"link token span {start}-{end} outside the page's {len(tokens)} tokens"
    first, last = tokens[start], tokens[end - 1]
    if not (isinstance(first, dict) and isinstance(last, dict)):
        return "page token is not an object"
    char_start, char_end = first.get("start"), last.get("end")
    if not (is_int(char_start) and is_int(char_end)):
        return "page token offsets are not integers"
    if not 0 <= char_start < char_end <= text_length:
        return f"link characters {char_start}-{char_end} outside the page text of {text_length}"
    return char_start, char_end


def is_damuel_part(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any(p.is_file() for p in path.glob("part-*"))


def find_damuel_parts(
    path: str | os.PathLike, langs: Collection[str] | None = None
) -> list[DamuelPart]:
    """The language parts under a DaMuEL folder (or the folder itself when it is one)."""
    path = Path(path)
    if is_damuel_part(path):
        part = DamuelPart(path)
        return [part] if langs is None or part.lang in langs else []
    if not path.is_dir():
        raise InputError(f"{path}: not found")
    parts = [DamuelPart(p) for p in sorted(path.iterdir()) if is_damuel_part(p)]
    if not parts:
        raise InputError(f"{path}: neither a DaMuEL language folder nor a folder of them")
    if langs is not None:
        missing = sorted(set(langs) - {p.lang for p in parts})
        if missing:
            raise InputError(f"{path}: no DaMuEL part for language(s) {', '.join(missing)}")
        parts = [p for p in parts if p.lang in langs]
    return parts


# --- One description per entity across languages (Botha et al. 2020) ----------


def best_description_language(
    langs_with_entity: Iterable[str],
    mention_counts: Mapping[str, int],
    lang_totals: Mapping[str, int],
    target_lang: str | None = None,
) -> str:
    """The language whose description an entity gets.

    The target language when the entity is there; otherwise the language with
    the most training mentions of the entity, ties broken by the language's
    total training mentions, then by the alphabetically first language code.
    """
    langs = list(langs_with_entity)
    if not langs:
        raise ValueError("an entity must be in at least one language")
    if target_lang in langs:
        return target_lang
    return min(langs, key=lambda lang: description_language_key(lang, mention_counts.get(lang, 0), lang_totals))


def description_language_key(lang: str, count: int, lang_totals: Mapping[str, int]) -> tuple:
    """The rule, as a sort key (smallest wins): most training mentions of the entity in the
    language, then the language's total training mentions, then the language code."""
    return (-count, -lang_totals.get(lang, 0), lang)


@dataclass
class LanguageChoice:
    """Which language describes each entity.

    `winner` maps a QID's number to (mention count << 8 | index into `langs`).
    Memory: one dict entry per distinct entity of all parts, about 100 bytes
    each in CPython (~1 GB for 10 M entities).
    """

    langs: tuple[str, ...]
    target_lang: str | None
    lang_totals: dict[str, int]
    winner: dict[int, int]

    def language_of(self, qid: str) -> str | None:
        packed = self.winner.get(qid_to_int(qid))
        return None if packed is None else self.langs[packed & 0xFF]

    def index_of(self, qid: str) -> int | None:
        packed = self.winner.get(qid_to_int(qid))
        return None if packed is None else packed & 0xFF


def choose_description_languages(
    parts: Sequence[DamuelPart],
    target_lang: str | None = None,
    *,
    report: SkipReport | None = None,
    origins: Collection[str] | None = WIKI_ORIGINS,
    require_page: bool = False,
) -> LanguageChoice:
    """First pass over the parts: count training mentions and pick a language
    per entity with the same rule as `best_description_language`.

    A part's counts are final once that part is read (its links are its own),
    so across parts only the running best per entity is kept; a part's own
    counts (one int per distinct linked entity) and its list of entities live
    only while it is read. The target part's links are not counted: it always
    wins. Malformed entity lines go to `report`; malformed links only reduce
    the counts and are summed up in one filter entry.
    """
    report = report if report is not None else SkipReport()
    langs = tuple(part.lang for part in parts)
    if len(set(langs)) != len(langs):
        raise InputError(f"the same language is given twice: {', '.join(langs)}")
    if len(langs) > 255:
        raise InputError(f"at most 255 languages at once, not {len(langs)}")
    winner: dict[int, int] = {}
    totals: dict[str, int] = {}
    bad_links = SkipReport()
    for index in sorted(range(len(parts)), key=lambda i: parts[i].lang != target_lang):
        part = parts[index]
        is_target = part.lang == target_lang
        present: list[int] = []
        counts: dict[int, int] = {}
        for location, obj in part.records(report):
            entity = part.entity_from_record(obj, location, report)
            if entity is not None and require_page and not entity.has_page:
                report.filter("entity without a Wikipedia page (require_page)")
            elif entity is not None:
                present.append(qid_to_int(entity.qid))
            if not is_target:
                for mention in part.links_of_record(obj, location, bad_links, origins):
                    key = qid_to_int(mention.qid)
                    counts[key] = counts.get(key, 0) + 1
        totals[part.lang] = sum(counts.values())
        for key in present:
            count = counts.get(key, 0)
            held = winner.get(key)
            if held is None or (
                langs[held & 0xFF] != target_lang
                and _beats(part.lang, count, langs[held & 0xFF], held >> 8, totals)
            ):
                winner[key] = count << 8 | index
    if bad_links.total_skipped:
        report.filter("malformed training link (not counted)", bad_links.total_skipped)
    return LanguageChoice(langs=langs, target_lang=target_lang, lang_totals=totals, winner=winner)


def _beats(
    lang: str, count: int, held_lang: str, held_count: int, totals: Mapping[str, int]
) -> bool:
    if held_lang == lang:
        return False  # the same entity twice in one part: keep the first
    return description_language_key(lang, count, totals) < description_language_key(held_lang, held_count, totals)


