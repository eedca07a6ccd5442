"""A Mewsli-9 dataset folder written from hand-made documents, for the evaluation and tuning tests."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

HEADER = ["docid", "position", "length", "mention", "url", "lang", "qid", "qid_in_refs", "freq_bin"]


def write_mewsli(root: Path, languages: dict[str, list[tuple]]) -> Path:
    """`languages`: per language, (docid, text or None for a missing file, [(surface, qid,
    qid_in_refs, freq_bin)]); a mention given as (position, length, surface, ...) is written as is
    (a span that need not match the text), a surface alone at its last place in the text."""
    for lang, docs in languages.items():
        folder = root / lang
        (folder / "text").mkdir(parents=True)
        with open(folder / "mentions.tsv", "w", encoding="utf-8", newline="") as m_out, \
                open(folder / "docs.tsv", "w", encoding="utf-8", newline="") as d_out:
            mentions, docs_tsv = csv.writer(m_out, delimiter="\t", lineterminator="\n"), \
                csv.writer(d_out, delimiter="\t", lineterminator="\n")
            mentions.writerow(HEADER)
            docs_tsv.writerow(["docid", "title", "curid", "revid", "url", "text_md5"])
            for docid, text, marked in docs:
                md5 = hashlib.md5(text.encode()).hexdigest() if text is not None else ""
                docs_tsv.writerow([docid, docid, 1, 1, f"https://{lang}.wikinews.example/{docid}", md5])
                if text is not None:
                    (folder / "text" / docid).write_bytes(text.encode())
                for item in marked:
                    if isinstance(item[0], int):
                        position, length, surface, qid, in_refs, freq_bin = item
                    else:
                        surface, qid, in_refs, freq_bin = item
                        position, length = text.rindex(surface), len(surface)
                    mentions.writerow([docid, position, length, surface, f"https://wikidata.org/wiki/{qid}", lang,
                                       qid, str(in_refs), freq_bin])
    return root
