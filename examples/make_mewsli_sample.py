"""Builds examples/mewsli9-sample/ (Mewsli-9 folder format) from examples/src/mewsli9-sample.json.

    python examples/make_mewsli_sample.py

The source holds short news-style texts written for mel, per language, with each
mention marked inline as `[M]surface text|QID[M]`. This script strips the markers,
computes the mention offsets in Unicode code points (so nothing is counted by hand),
and writes, per language:

    <lang>/docs.tsv      docid, title, curid, revid, url, text_md5
    <lang>/mentions.tsv  docid, position, length, mention, url, lang, qid, qid_in_refs, freq_bin
    <lang>/text/<docid>  the clean text (UTF-8); text_md5 is the MD5 of this file

Column values:
- docid `<lang>-<n>`; curid and revid are made-up but stable numbers; the document
  url is a placeholder on the reserved `.example` domain, shaped like a Wikinews URL.
- mention url: the entity's Wikidata page (the real dataset links Wikipedia pages).
- qid_in_refs: "True" when examples/kb.jsonl has an English entry for the QID (the
  real dataset: "the entity has an English Wikipedia article").
- freq_bin: the real dataset's bin index 0-5 (0: 0 occurrences, 1: 1-9, 2: 10-99,
  3: 100-999, 4: 1000-9999, 5: 10000+) applied to the number of mentions of the same
  QID elsewhere in this sample (other documents, all languages), standing in for the
  training-set counts the real bins are based on.

Only the standard library is used. Gold QIDs missing from examples/kb.jsonl are an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from markers import strip_markers

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "src" / "mewsli9-sample.json"
KB = HERE / "kb.jsonl"
OUTPUT = HERE / "mewsli9-sample"
DOCS_HEADER = ["docid", "title", "curid", "revid", "url", "text_md5"]
MENTIONS_HEADER = ["docid", "position", "length", "mention", "url", "lang", "qid", "qid_in_refs", "freq_bin"]
BIN_EDGES = (1, 10, 100, 1000, 10000)  # bin i holds counts in [edge[i-1], edge[i]); 0 holds 0


def freq_bin(count: int) -> int:
    return sum(count >= edge for edge in BIN_EDGES)


def gold_mentions(marked: str, where: str) -> tuple[str, list[tuple[int, int, str, str]]]:
    """Clean text and (position, length, surface, qid) per mention, in code points."""
    text, found = strip_markers(marked, where)
    mentions = []
    for start, surface, qid in found:
        if surface != surface.strip():
            sys.exit(f"{where}: mention {surface!r} has leading or trailing spaces")
        if qid is None:
            sys.exit(f"{where}: mention {surface!r} has no QID (expected '[M]surface|QID[M]')")
        mentions.append((start, len(surface), surface, qid))
    return text, mentions


def kb_qids_with_english() -> tuple[set[str], set[str]]:
    if not KB.exists():
        sys.exit(f"{KB} is missing: run examples/make_kb.py first")
    all_qids: set[str] = set()
    english: set[str] = set()
    for line in KB.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        all_qids.add(record["qid"])
        if record["lang"] == "en":
            english.add(record["qid"])
    return all_qids, english


def main() -> None:
    source = json.loads(SOURCE.read_text(encoding="utf-8"))
    kb_qids, english_qids = kb_qids_with_english()
    documents: list[dict] = []  # lang, docid, title, text, mentions
    curid = 910000
    for lang, docs in source.items():
        if lang.startswith("_"):
            continue
        for number, doc in enumerate(docs, start=1):
            docid = f"{lang}-{number}"
            where = f"{SOURCE.name}: {docid} ({doc['title']!r})"
            text, mentions = gold_mentions("\n".join(doc["text"]) + "\n", where)
            for _, _, surface, qid in mentions:
                if qid not in kb_qids:
                    sys.exit(f"{where}: gold {qid} of {surface!r} is not in {KB.name}")
            curid += 1
            documents.append({"lang": lang, "docid": docid, "title": doc["title"], "text": text,
                              "mentions": mentions, "curid": curid})
    totals = Counter(qid for doc in documents for *_, qid in doc["mentions"])

    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    for lang in dict.fromkeys(doc["lang"] for doc in documents):
        folder = OUTPUT / lang
        (folder / "text").mkdir(parents=True)
        with (folder / "docs.tsv").open("w", encoding="utf-8", newline="") as docs_file, \
                (folder / "mentions.tsv").open("w", encoding="utf-8", newline="") as mentions_file:
            docs_tsv = csv.writer(docs_file, delimiter="\t", lineterminator="\n")
            mentions_tsv = csv.writer(mentions_file, delimiter="\t", lineterminator="\n")
            docs_tsv.writerow(DOCS_HEADER)
            mentions_tsv.writerow(MENTIONS_HEADER)
            for doc in (d for d in documents if d["lang"] == lang):
                data = doc["text"].encode("utf-8")
                (folder / "text" / doc["docid"]).write_bytes(data)
                url = f"https://{lang}.wikinews.example/wiki/{quote(doc['title'].replace(' ', '_'), safe='_')}"
                docs_tsv.writerow([doc["docid"], doc["title"], doc["curid"], 4_000_000 + doc["curid"],
                                   url, hashlib.md5(data).hexdigest()])
                here = Counter(qid for *_, qid in doc["mentions"])
                for position, length, surface, qid in doc["mentions"]:
                    elsewhere = totals[qid] - here[qid]
                    mentions_tsv.writerow([doc["docid"], position, length, surface,
                                           f"https://www.wikidata.org/wiki/{qid}", lang, qid,
                                           str(qid in english_qids), freq_bin(elsewhere)])
    languages = Counter(doc["lang"] for doc in documents)
    mention_count = sum(len(doc["mentions"]) for doc in documents)
    print(f"wrote {OUTPUT.relative_to(HERE.parent)}: {len(documents)} documents, {mention_count} mentions, "
          f"{len(languages)} languages", file=sys.stderr)


if __name__ == "__main__":
    main()
