"""Checks the bundled sample data in examples/ and prints what it holds.

    python examples/check_samples.py          # exit status 0 when every check passes

What is checked:

- kb.jsonl (mel KB JSON Lines): one JSON object a line with exactly qid, lang, label,
  description, aliases; well-formed QIDs; Mewsli-9 language codes; no duplicate
  (qid, lang); at least five languages per entity; text in the language's script
  (Arabic script for ar/fa, with Persian ی/ک in fa and Arabic ي/ك in ar, Cyrillic
  for sr, Tamil for ta, kana/kanji for ja) and no letters of another language's
  script; the deliberately ambiguous names are really shared by the entities meant.
- mewsli9-sample/<lang>/ (Mewsli-9 format): exact TSV headers, docids unique and
  prefixed by the language, one text file per document and no other, text_md5 equal
  to the MD5 of the file, text[position:position+length] == mention in code points,
  no overlapping mentions, gold QIDs present in kb.jsonl, qid_in_refs True/False,
  freq_bin 0-5, no field a TSV reader could misread (tabs, newlines, quotes).
- corpus.jsonl (mel documents): unique ids, lang and text present; `mentions` spans
  inside the text (code points, end exclusive), sorted and not overlapping, gold qids
  present in kb.jsonl; documents without `mentions` carry paired [M] markers.

Only the standard library is used, so it runs anywhere the examples are read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
KB_PATH = HERE / "kb.jsonl"
MEWSLI_PATH = HERE / "mewsli9-sample"
CORPUS_PATH = HERE / "corpus.jsonl"
MEWSLI_LANGS = ("ar", "de", "en", "es", "fa", "ja", "sr", "ta", "tr")
QID = re.compile(r"^Q[1-9][0-9]*$")
DOCS_HEADER = ["docid", "title", "curid", "revid", "url", "text_md5"]
MENTIONS_HEADER = ["docid", "position", "length", "mention", "url", "lang", "qid", "qid_in_refs", "freq_bin"]
MIN_LANGS_PER_ENTITY = 5

# Names that must be shared (case-insensitively, as label or alias, in at least one
# language) by all the entities of the group: the sample's deliberate ambiguities.
AMBIGUOUS_GROUPS = {
    "Apple (company / fruit)": {"Q312", "Q89"},
    "Georgia (country / US state)": {"Q230", "Q1428"},
    "Jordan (country / river / Michael Jordan)": {"Q810", "Q40059", "Q41421"},
    "Amazon (company / river)": {"Q3884", "Q3783"},
    "Java (island / programming language)": {"Q3757", "Q251"},
    "Mercury (planet / element / Freddie Mercury)": {"Q308", "Q925", "Q15869"},
    "Washington (D.C. / state / George Washington)": {"Q61", "Q1223", "Q23"},
    "New York (city / state)": {"Q60", "Q1384"},
    "Mexico (country / Mexico City)": {"Q96", "Q1489"},
    "Luxembourg (country / city)": {"Q32", "Q1842"},
    "Kuwait (country / city)": {"Q817", "Q35178"},
    "Panama (country / city)": {"Q804", "Q3306"},
    "Algeria / Algiers (ar, tr, sr)": {"Q262", "Q3561"},
    "Tunisia / Tunis (ar, tr, sr)": {"Q948", "Q3572"},
    "Oman / Amman (ar عمان)": {"Q842", "Q3805"},
    "Granada (Spanish city / Grenada in es)": {"Q8810", "Q769"},
    "Cambridge (England / Massachusetts / university)": {"Q350", "Q49111", "Q35794"},
    "Tesla (company / Nikola Tesla)": {"Q478214", "Q9036"},
    "Ford (company / Henry Ford)": {"Q44294", "Q8768"},
    "Niger (country / river)": {"Q1032", "Q3542"},
    "Barcelona (city / football club)": {"Q1492", "Q7156"},
}

SCRIPTS = {
    "arabic": re.compile(r"[\u0600-\u06FF\u0750-\u077F\uFB50-\uFDFF\uFE70-\uFEFF]"),
    "cyrillic": re.compile(r"[\u0400-\u04FF]"),
    "tamil": re.compile(r"[\u0B80-\u0BFF]"),
    "kana": re.compile(r"[\u3040-\u30FF\u31F0-\u31FF]"),
    "han": re.compile(r"[\u4E00-\u9FFF\u3400-\u4DBF]"),
    "latin": re.compile(r"[A-Za-z\u00C0-\u024F]"),
}
# The script each language is written in, and the scripts its text may not contain.
OWN_SCRIPT = {"ar": "arabic", "fa": "arabic", "sr": "cyrillic", "ta": "tamil", "ja": "kana|han"}
FOREIGN = {lang: {"arabic", "cyrillic", "tamil", "kana", "han"} for lang in MEWSLI_LANGS}
FOREIGN["ar"] -= {"arabic"}
FOREIGN["fa"] -= {"arabic"}
FOREIGN["sr"] -= {"cyrillic"}
FOREIGN["ta"] -= {"tamil"}
FOREIGN["ja"] -= {"kana", "han"}
PERSIAN_ONLY = re.compile(r"[\u06CC\u06A9\u067E\u0686\u0698\u06AF]")  # ی ک پ چ ژ گ
ARABIC_ONLY_IN_FA = re.compile(r"[\u064A\u0643]")  # ي ك


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def json_lines(path: Path, problems: Problems) -> Iterator[tuple[str, object]]:
    """(file:line, parsed value) for each line of a JSON Lines file; a bad line is a problem."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.add(where, f"not JSON ({error})")
            continue
        yield where, record


def has_script(text: str, script: str) -> bool:
    return any(SCRIPTS[name].search(text) for name in script.split("|"))


def check_kb(problems: Problems) -> dict:
    entities: dict[str, dict[str, dict]] = defaultdict(dict)
    if not KB_PATH.exists():
        problems.add(KB_PATH.name, "missing")
        return {}
    for where, record in json_lines(KB_PATH, problems):
        if not isinstance(record, dict) or set(record) != {"qid", "lang", "label", "description", "aliases"}:
            problems.add(where, "expected exactly the fields qid, lang, label, description, aliases")
            continue
        qid, lang = record["qid"], record["lang"]
        if not isinstance(qid, str) or not QID.match(qid):
            problems.add(where, f"bad qid {qid!r}")
            continue
        if lang not in MEWSLI_LANGS:
            problems.add(where, f"lang {lang!r} is not a Mewsli-9 language")
            continue
        texts = [record["label"], record["description"], *record["aliases"]] \
            if isinstance(record["aliases"], list) else []
        if not texts or not all(isinstance(t, str) and t and t == t.strip() for t in texts):
            problems.add(where, "label, description and aliases must be non-empty strings without outer spaces")
            continue
        if unicodedata.normalize("NFC", "".join(texts)) != "".join(texts):
            problems.add(where, "text is not in Unicode NFC form")
        if len(set(record["aliases"])) != len(record["aliases"]) or record["label"] in record["aliases"]:
            problems.add(where, "aliases repeat each other or the label")
        if lang in entities[qid]:
            problems.add(where, f"second {lang!r} line for {qid}")
        entities[qid][lang] = record
        joined = " ".join(texts)
        for script in FOREIGN[lang]:
            if SCRIPTS[script].search(joined):
                problems.add(where, f"{lang} text contains {script} letters: {joined!r}")
        if lang in OWN_SCRIPT:
            # Labels may be a Latin brand name in Japanese ("Apple", "Java"); descriptions never.
            fields = ["description"] if lang == "ja" else ["label", "description"]
            for name in fields:
                if not has_script(record[name], OWN_SCRIPT[lang]):
                    problems.add(where, f"{lang} {name} {record[name]!r} is not in {OWN_SCRIPT[lang]} script")
        if lang == "fa" and ARABIC_ONLY_IN_FA.search(joined):
            problems.add(where, "Persian text uses Arabic ي/ك instead of Persian ی/ک")
        if lang == "ar" and PERSIAN_ONLY.search(joined):
            problems.add(where, "Arabic text uses Persian-only letters (ی ک پ چ ژ گ)")
    for qid, langs in entities.items():
        if len(langs) < MIN_LANGS_PER_ENTITY:
            problems.add(KB_PATH.name, f"{qid} has {len(langs)} languages, fewer than {MIN_LANGS_PER_ENTITY}")
    return entities


def shared_names(entities: dict) -> dict[tuple[str, str], set[str]]:
    """(lang, casefolded name) -> QIDs whose label or alias it is, for names of 2+ entities."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for qid, langs in entities.items():
        for lang, record in langs.items():
            for name in [record["label"], *record["aliases"]]:
                owners[(lang, name.casefold())].add(qid)
    return {key: qids for key, qids in owners.items() if len(qids) > 1}


def check_ambiguity(entities: dict, problems: Problems) -> tuple[dict, dict[str, list[str]]]:
    shared = shared_names(entities)
    found: dict[str, list[str]] = {}
    for group, qids in AMBIGUOUS_GROUPS.items():
        missing = sorted(q for q in qids if q not in entities)
        if missing:
            problems.add(KB_PATH.name, f"ambiguity group {group!r}: {', '.join(missing)} not in the KB")
            continue
        names = sorted(f"{lang}:{name}" for (lang, name), owners in shared.items() if qids <= owners)
        if not names:
            problems.add(KB_PATH.name, f"ambiguity group {group!r}: its entities share no name")
        found[group] = names
    return shared, found


def read_tsv(path: Path, header: list[str], problems: Problems) -> list[dict]:
    if not path.exists():
        problems.add(str(path.relative_to(HERE)), "missing")
        return []
    raw = path.read_text(encoding="utf-8")
    rows = list(csv.reader(raw.splitlines(), delimiter="\t"))
    where = str(path.relative_to(HERE))
    if not rows or rows[0] != header:
        problems.add(where, f"header is {rows[0] if rows else None}, expected {header}")
        return []
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            problems.add(f"{where}:{number}", f"{len(row)} fields, expected {len(header)}")
            continue
        if any(not field or field != field.strip() or '"' in field for field in row):
            problems.add(f"{where}:{number}", "an empty field, outer spaces or a quote character")
        records.append({"line": number, **dict(zip(header, row))})
    # The raw lines must be the rows: no field may hide a tab or a line break.
    if len(raw.splitlines()) != len(rows):
        problems.add(where, "a field holds a line break")
    return records


def check_mewsli(entities: dict, problems: Problems) -> dict:
    stats: dict = {"docs": Counter(), "mentions": Counter(), "freq_bin": Counter(), "qids": set()}
    if not MEWSLI_PATH.is_dir():
        problems.add(MEWSLI_PATH.name, "missing")
        return stats
    english = {qid for qid, langs in entities.items() if "en" in langs}
    for folder in sorted(p for p in MEWSLI_PATH.iterdir() if p.is_dir()):
        lang = folder.name
        if lang not in MEWSLI_LANGS:
            problems.add(folder.name, "not a Mewsli-9 language folder")
            continue
        texts: dict[str, str] = {}
        docs = read_tsv(folder / "docs.tsv", DOCS_HEADER, problems)
        for doc in docs:
            where = f"{lang}/docs.tsv:{doc['line']}"
            docid = doc["docid"]
            if not docid.startswith(f"{lang}-") or docid in texts:
                problems.add(where, f"docid {docid!r} is repeated or lacks the '{lang}-' prefix")
                continue
            if not (doc["curid"].isdigit() and doc["revid"].isdigit()):
                problems.add(where, "curid and revid must be numbers")
            if not doc["url"].startswith(f"https://{lang}.wikinews.example/wiki/"):
                problems.add(where, f"url {doc['url']!r} is not the Wikinews-style placeholder")
            path = folder / "text" / docid
            if not path.exists():
                problems.add(where, f"text/{docid} is missing")
                continue
            data = path.read_bytes()
            if hashlib.md5(data).hexdigest() != doc["text_md5"]:
                problems.add(where, f"text_md5 does not match text/{docid}")
            texts[docid] = data.decode("utf-8")
        extra = sorted(p.name for p in (folder / "text").iterdir() if p.name not in texts) \
            if (folder / "text").is_dir() else []
        if extra:
            problems.add(f"{lang}/text", f"files with no docs.tsv row: {extra}")
        stats["docs"][lang] = len(texts)
        spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for mention in read_tsv(folder / "mentions.tsv", MENTIONS_HEADER, problems):
            where = f"{lang}/mentions.tsv:{mention['line']}"
            docid, qid = mention["docid"], mention["qid"]
            if docid not in texts:
                problems.add(where, f"docid {docid!r} has no document")
                continue
            if not (mention["position"].isdigit() and mention["length"].isdigit()):
                problems.add(where, "position and length must be non-negative integers")
                continue
            start, length = int(mention["position"]), int(mention["length"])
            found = texts[docid][start:start + length]
            if length == 0 or found != mention["mention"]:
                problems.add(where, f"text[{start}:{start + length}] is {found!r}, not {mention['mention']!r}")
            spans[docid].append((start, start + length))
            if mention["lang"] != lang:
                problems.add(where, f"lang {mention['lang']!r} in the {lang} folder")
            if not QID.match(qid) or qid not in entities:
                problems.add(where, f"gold {qid!r} is not in {KB_PATH.name}")
            if mention["url"] != f"https://www.wikidata.org/wiki/{qid}":
                problems.add(where, "url is not the gold entity's Wikidata page")
            expected_refs = str(qid in english)
            if mention["qid_in_refs"] != expected_refs:
                problems.add(where, f"qid_in_refs is {mention['qid_in_refs']!r}, expected {expected_refs!r}")
            if mention["freq_bin"] not in {"0", "1", "2", "3", "4", "5"}:
                problems.add(where, f"freq_bin {mention['freq_bin']!r} is not 0-5")
            stats["mentions"][lang] += 1
            stats["freq_bin"][mention["freq_bin"]] += 1
            stats["qids"].add(qid)
        for docid, doc_spans in spans.items():
            doc_spans.sort()
            for (_, end), (start, _) in zip(doc_spans, doc_spans[1:]):
                if start < end:
                    problems.add(f"{lang}/mentions.tsv", f"overlapping mentions in {docid}")
    return stats


def check_corpus(entities: dict, problems: Problems) -> Counter:
    stats: Counter = Counter()
    if not CORPUS_PATH.exists():
        problems.add(CORPUS_PATH.name, "missing")
        return stats
    ids: set[str] = set()
    for where, doc in json_lines(CORPUS_PATH, problems):
        if not all(isinstance(doc.get(key), str) and doc[key] for key in ("id", "lang", "text")):
            problems.add(where, "id, lang and text must be non-empty strings")
            continue
        if doc["id"] in ids:
            problems.add(where, f"id {doc['id']!r} repeated")
        ids.add(doc["id"])
        stats[f"lang {doc['lang']}"] += 1
        text = doc["text"]
        if "mentions" not in doc:
            markers = text.count("[M]")
            if markers == 0 or markers % 2 or re.search(r"\[M\]\s*\[M\]", text):
                problems.add(where, "no mentions field, and the [M] markers are missing or unpaired")
            stats["inline [M] markers"] += 1
            stats["mentions"] += markers // 2
            continue
        previous_end = 0
        gold = False
        for mention in doc["mentions"]:
            start, end = mention.get("start"), mention.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and previous_end <= start < end <= len(text)):
                problems.add(where, f"mention {mention} is outside the text, empty, unsorted or overlapping")
                continue
            previous_end = end
            if "qid" in mention:
                gold = True
                if mention["qid"] not in entities:
                    problems.add(where, f"gold qid {mention['qid']!r} is not in {KB_PATH.name}")
            stats["mentions"] += 1
        if "[M]" in text:
            problems.add(where, "a document with a mentions field still has [M] markers")
        stats["gold qids" if gold else "mention spans"] += 1
    stats["documents"] = len(ids)
    return stats


def main() -> int:
    problems = Problems()
    entities = check_kb(problems)
    shared, groups = check_ambiguity(entities, problems)
    mewsli = check_mewsli(entities, problems)
    corpus = check_corpus(entities, problems)

    langs_per_entity = Counter(len(langs) for langs in entities.values())
    lines_per_lang = Counter(lang for langs in entities.values() for lang in langs)
    print(f"kb.jsonl: {len(entities)} entities, {sum(lines_per_lang.values())} lines, "
          f"{sum(len(r['aliases']) for langs in entities.values() for r in langs.values())} aliases")
    print("  languages per entity: " + ", ".join(f"{n} langs: {c}" for n, c in sorted(langs_per_entity.items())))
    print("  lines per language:   " + ", ".join(f"{lang} {lines_per_lang[lang]}" for lang in MEWSLI_LANGS))
    print(f"  names shared by 2+ entities (label or alias, same language): {len(shared)}")
    print(f"  deliberate ambiguity groups: {sum(bool(v) for v in groups.values())} of {len(AMBIGUOUS_GROUPS)}")
    for group, names in groups.items():
        print(f"    {group}: {', '.join(names[:4]) if names else 'NOT SHARED'}")
    print(f"mewsli9-sample: {sum(mewsli['docs'].values())} documents, {sum(mewsli['mentions'].values())} mentions, "
          f"{len(mewsli['qids'])} distinct gold QIDs, {len(mewsli['docs'])} languages")
    print("  mentions per language: " + ", ".join(f"{lang} {mewsli['mentions'][lang]} ({mewsli['docs'][lang]} docs)"
                                                 for lang in sorted(mewsli["docs"])))
    print("  freq_bin: " + ", ".join(f"{b}: {c}" for b, c in sorted(mewsli["freq_bin"].items())))
    ambiguous_qids = set().union(*AMBIGUOUS_GROUPS.values())
    print(f"  gold QIDs from the ambiguity groups: {len(mewsli['qids'] & ambiguous_qids)}")
    print(f"corpus.jsonl: {corpus['documents']} documents, {corpus['mentions']} mentions; "
          f"{corpus['mention spans']} with mention spans, {corpus['inline [M] markers']} with inline [M] markers, "
          f"{corpus['gold qids']} with gold qids")
    print("  documents per language: " + ", ".join(
        f"{key[5:]} {count}" for key, count in sorted(corpus.items()) if key.startswith("lang ")))
    if problems.items:
        print(f"\n{len(problems.items)} problem(s):", file=sys.stderr)
        for item in problems.items:
            print(f"  {item}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
