"""Writes the tiny test fixtures in tests/data (run: python tests/data/make_fixtures.py).

- damuel/es/part-00000.xz, part-00001.xz and damuel/de/part-00000.xz: DaMuEL
  language parts (xz JSON Lines; tokens with character offsets, links with
  token indices, an astral character before a link, a link without qid, a
  link added by DaMuEL rather than by Wikipedia editors).
- kb.jsonl: a mel KB file.
- docs.jsonl: mel documents (gold qids, extra fields, astral characters,
  inline [M] markers); docs_bad.jsonl: one bad record per line, each with a
  different problem (one holds bytes that are not UTF-8).
- mewsli/es: a Mewsli-9 language folder (docs.tsv, mentions.tsv, text/),
  written the way pandas writes TSV; a mention holding a tab and quotes,
  astral characters, a "\\r\\n" line break, a misplaced span, a missing text.

Only the standard library is used, so the fixtures can be remade anywhere.
"""

from __future__ import annotations

import csv
import hashlib
import json
import lzma
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def tokenize(text: str) -> list[dict]:
    """Word and punctuation tokens with code-point offsets."""
    return [{"start": m.start(), "end": m.end()} for m in re.finditer(r"\w+|[^\w\s]", text)]


def damuel_entity(
    qid: str,
    label: str | None,
    description: str | None,
    page: str | None = None,
    links: list[tuple[str, str | None, str]] = (),
    title: str | None = None,
) -> dict:
    """A DaMuEL line; `links` are (surface text, qid or None, origin), found in
    `page` in order and turned into token indices (end exclusive)."""
    entity: dict = {"qid": qid}
    if label is not None:
        entity["label"] = label
    if description is not None:
        entity["description"] = description
    if page is None:
        return entity
    tokens = tokenize(page)
    wiki_links = []
    search_from = 0
    for surface, link_qid, origin in links:
        start_char = page.index(surface, search_from)
        end_char = start_char + len(surface)
        search_from = end_char
        first = next(i for i, t in enumerate(tokens) if t["start"] == start_char)
        last = next(i for i, t in enumerate(tokens) if t["end"] == end_char)
        link = {"start": first, "end": last + 1, "origin": origin}
        if link_qid is not None:
            link["qid"] = link_qid
        wiki_links.append(link)
    entity["wiki"] = {"title": title or label, "text": page, "tokens": tokens, "links": wiki_links}
    return entity


def write_damuel_part(folder: Path, name: str, entities: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(_line(e) + "\n" for e in entities).encode("utf-8")
    (folder / name).write_bytes(lzma.compress(data))


DAMUEL_ES_0 = [
    damuel_entity(
        "Q90", "París", "capital de Francia",
        "París es la capital de Francia. Su torre 🗼 mira al Sena y a la Île-de-France.",
        links=[("Francia", "Q142", "wiki"), ("Sena", "Q1471", "wiki"), ("Île-de-France", "Q13917", "damuel")],
    ),
    damuel_entity(
        "Q142", "Francia", "país de Europa occidental",
        "Francia es un país cuya capital es París. Limita con Alemania y con Bélgica.",
        links=[("París", "Q90", "wiki"), ("Alemania", "Q183", "wiki"), ("Bélgica", None, "wiki")],
    ),
    damuel_entity("Q5", "ser humano", "especie de mamífero"),
]
DAMUEL_ES_1 = [
    damuel_entity(
        "Q64", "Berlín", "capital de Alemania",
        "Berlín es la capital de Alemania.",
        links=[("Alemania", "Q183", "wiki")],
    ),
    damuel_entity("Q183", "Alemania", "país de Europa central"),
]
DAMUEL_DE_0 = [
    damuel_entity(
        "Q64", "Berlin", "Hauptstadt Deutschlands",
        "Berlin ist die Hauptstadt von Deutschland.",
        links=[("Deutschland", "Q183", "wiki")],
    ),
    damuel_entity(
        "Q183", "Deutschland", "Staat in Mitteleuropa",
        "Deutschland ist ein Staat in Mitteleuropa. Seine Hauptstadt ist Berlin, nicht München.",
        links=[("Berlin", "Q64", "wiki"), ("München", "Q1726", "wiki")],
    ),
    damuel_entity(
        "Q1726", "München", "Landeshauptstadt Bayerns",
        "München ist die Hauptstadt Bayerns.", links=[],
    ),
]

KB = [
    {"qid": "Q90", "lang": "en", "label": "Paris", "description": "capital of France", "aliases": ["City of Light"]},
    {"qid": "Q142", "lang": "en", "label": "France", "description": "country in Western Europe", "aliases": ["French Republic"]},
    {"qid": "Q64", "lang": "en", "label": "Berlin", "description": "capital of Germany", "aliases": []},
    {"qid": "Q183", "lang": "de", "label": "Deutschland", "description": "Staat in Mitteleuropa", "aliases": ["Bundesrepublik Deutschland"]},
    {"qid": "Q1490", "lang": "ja", "label": "東京都", "description": "日本の首都", "aliases": ["東京"]},
]

DOCS = [
    {
        "id": "d1", "lang": "es", "source": "fixture",
        "text": "París es la capital de Francia.",
        "mentions": [{"start": 0, "end": 5, "qid": "Q90"}, {"start": 23, "end": 30, "qid": "Q142"}],
    },
    {
        "id": "d2", "lang": "en",
        "text": "🙂 𝔓aris is not Paris, said the 🇫🇷 minister in Berlin.",
        "mentions": [{"start": 15, "end": 20, "qid": "Q90", "note": "after astral characters"},
                     {"start": 46, "end": 52}],
    },
    {"id": "d3", "lang": "en", "meta": {"kept": [1, 2]},
     "text": "Berlin is the capital of [M]Germany[M], and [M] Berlin [M] is big."},
    {"id": 4, "lang": "de", "text": "Berlin und München.",
     "mentions": [{"start": 0, "end": 6}, {"start": 11, "end": 18}, {"start": 0, "end": 6}]},
]

# (raw line, the reason the reader must give)
DOCS_BAD = [
    (b'{"id": "b1", "text": "no closing brace"', "not valid JSON (unexpected end of data at column 40)"),
    (b'{"id": "b2", "mentions": []}', "missing field 'text'"),
    (b'{"id": "b3", "text": "thirty characters of text here", "mentions": [{"start": 0, "end": 6}, {"start": 40, "end": 45}]}',
     "mention 2: span 40-45 outside text of 30 characters"),
    (b'{"id": "b4", "text": "abcdef", "mentions": [{"start": 3, "end": 3}]}', "mention 1: start >= end (3 >= 3)"),
    (b'{"id": "b5", "text": "caf\xe9", "mentions": []}', "invalid UTF-8 (byte 0xe9 at offset 25)"),
    (b'["b6", "an array"]', "not a JSON object (found an array)"),
    (b'{"id": "b7", "text": "abc", "mentions": {"start": 0, "end": 1}}', "field 'mentions' is not a list"),
    (b'{"id": "b8", "text": "abc", "mentions": [{"start": 0}]}', "mention 1: missing field 'end'"),
    (b'{"id": "b9", "text": "abc", "mentions": [{"start": "0", "end": 1}]}', "mention 1: 'start' is not an integer: '0'"),
    (b'{"id": "b10", "text": "abc", "mentions": [{"start": 0, "end": 1, "qid": "P31"}]}',
     "mention 1: field 'qid' is not a Wikidata item id: 'P31'"),
    (b'{"id": "b11", "text": "one [M]two[M] three [M]"}', "odd number of [M] markers (3)"),
    (b'{"id": "b12", "text": "one [M] [M] two"}', "inline mention 1 is empty"),
    (b'{"id": "b13", "text": "nothing marked"}', "missing field 'mentions' (and no [M] markers in the text)"),
    (b'{"id": "b14", "text": 42, "mentions": []}', "field 'text' is not a string"),
    (b'{"id": "b15", "text": "abc", "mentions": [[0, 1]]}', "mention 1: not a JSON object"),
]

MEWSLI_TEXTS = {
    "es-1": "El presidente de 🇫🇷 Francia habló.\r\nLo publicó \"Le Monde\" en Ciudad de\tMéxico.",
    "es-2": "𝔄 Berlín llegó la delegación de Alemania.",
}
# (docid, mention, occurrence to point at or an explicit position, qid, qid_in_refs, freq_bin)
MEWSLI_MENTIONS = [
    ("es-1", "Francia", None, "Q142", "True", 5),
    ("es-1", '"Le Monde"', None, "Q12461", "True", 3),
    ("es-1", "Ciudad de\tMéxico", None, "Q1489", "True", 4),
    ("es-2", "Berlín", None, "Q64", "True", 4),
    ("es-2", "Alemania", 31, "Q183", "True", 5),  # true position 32: a misplaced span
    ("es-3", "Madrid", 0, "Q2807", "False", 0),  # es-3 has no text file
]


def write_mewsli(folder: Path) -> None:
    text_dir = folder / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    for docid, text in MEWSLI_TEXTS.items():
        (text_dir / docid).write_bytes(text.encode("utf-8"))
    with open(folder / "docs.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["docid", "title", "curid", "revid", "url", "text_md5"])
        for number, docid in enumerate(["es-1", "es-2", "es-3"], start=1):
            text = MEWSLI_TEXTS.get(docid, "")
            md5 = hashlib.md5(text.encode("utf-8")).hexdigest() if text else "0" * 32
            writer.writerow([docid, f"Noticia {number}", number, 1000 + number,
                             f"https://es.wikinews.org/wiki?curid={number}", md5])
    with open(folder / "mentions.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["docid", "position", "length", "mention", "url", "lang", "qid", "qid_in_refs", "freq_bin"])
        for docid, mention, position, qid, in_refs, freq_bin in MEWSLI_MENTIONS:
            if position is None:
                position = MEWSLI_TEXTS[docid].index(mention)
            url = "http://es.wikipedia.org/wiki/" + mention.replace(" ", "_").replace("\t", "_")
            writer.writerow([docid, position, len(mention), mention, url, "es", qid, in_refs, freq_bin])


def write_fixtures(out: Path = HERE) -> None:
    write_damuel_part(out / "damuel" / "es", "part-00000.xz", DAMUEL_ES_0)
    write_damuel_part(out / "damuel" / "es", "part-00001.xz", DAMUEL_ES_1)
    write_damuel_part(out / "damuel" / "de", "part-00000.xz", DAMUEL_DE_0)
    (out / "kb.jsonl").write_text("".join(_line(e) + "\n" for e in KB), encoding="utf-8")
    (out / "docs.jsonl").write_text("".join(_line(d) + "\n" for d in DOCS), encoding="utf-8")
    (out / "docs_bad.jsonl").write_bytes(b"".join(raw + b"\n" for raw, _ in DOCS_BAD))
    write_mewsli(out / "mewsli" / "es")


if __name__ == "__main__":
    write_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
