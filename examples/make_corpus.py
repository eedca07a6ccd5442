"""Builds examples/corpus.jsonl (mel documents JSON Lines) from examples/src/corpus.json.

    python examples/make_corpus.py

Mentions in the source are marked `[M]surface[M]` or `[M]surface|QID[M]`. Each document's
`style` decides how it is written, so the sample shows every input form `mel link` accepts:

- "spans":  clean text plus `mentions: [{"start", "end"}]` (Unicode code points, end exclusive);
- "inline": the text keeps `[M]surface[M]` markers and there is no `mentions` field;
- "gold":   like "spans", each mention also carrying its gold `qid` (all present in kb.jsonl).

Any other field of a source document (for instance "source") is copied as it is.
Only the standard library is used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from markers import MARKED, strip_markers

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "src" / "corpus.json"
OUTPUT = HERE / "corpus.jsonl"
KB = HERE / "kb.jsonl"


def convert(doc: dict, kb_qids: set[str]) -> dict:
    where = f"{SOURCE.name}: {doc.get('id')!r}"
    style = doc["style"]
    record = {key: value for key, value in doc.items() if key not in ("style", "text")}
    if style == "inline":
        record["text"] = MARKED.sub(lambda m: f"[M]{m['surface']}[M]", doc["text"])
        return record
    if style not in ("spans", "gold"):
        sys.exit(f"{where}: unknown style {style!r} (expected spans, inline or gold)")
    text, found = strip_markers(doc["text"], where)
    mentions: list[dict] = []
    for start, surface, qid in found:
        mention = {"start": start, "end": start + len(surface)}
        if style == "gold":
            if qid is None or qid not in kb_qids:
                sys.exit(f"{where}: gold mention {surface!r} needs a QID that is in {KB.name}")
            mention["qid"] = qid
        mentions.append(mention)
    record["text"] = text
    record["mentions"] = mentions
    return record


def main() -> None:
    kb_qids = {json.loads(line)["qid"] for line in KB.read_text(encoding="utf-8").splitlines()}
    docs = json.loads(SOURCE.read_text(encoding="utf-8"))["docs"]
    with OUTPUT.open("w", encoding="utf-8", newline="\n") as out:
        for doc in docs:
            record = convert(doc, kb_qids)
            # Fixed key order (id, lang, extra fields, text, mentions) keeps the file easy to read.
            ordered = {"id": record.pop("id"), "lang": record.pop("lang")}
            text, mentions = record.pop("text"), record.pop("mentions", None)
            ordered.update(record)
            ordered["text"] = text
            if mentions is not None:
                ordered["mentions"] = mentions
            out.write(json.dumps(ordered, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUTPUT.relative_to(HERE.parent)}: {len(docs)} documents", file=sys.stderr)


if __name__ == "__main__":
    main()
