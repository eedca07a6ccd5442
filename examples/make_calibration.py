"""Write exporters/data/calibration.jsonl: the texts int8 export calibrates on.

The int8 variant fixes each quantised activation's scale from how the fp32 model
behaves on these texts (exporters/quantize.py). They are drawn from this folder's
hand-written samples, which mel may ship: mention windows from the Mewsli-9 sample and
the corpus, `[M] label [M] description` entity texts and alias strings from the KB, in
all nine languages. KB *labels* are left out, so that the label-retrieval benchmark
(bench/bench_quantization.py) measures on strings calibration never saw.

    python examples/make_calibration.py           # standard library only
    python examples/make_calibration.py --check   # exit 1 when the shipped file is not what this makes

Changing the file changes every int8 export: update CALIBRATION_SHA256 in
exporters/quantize.py with it.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "exporters" / "data" / "calibration.jsonl"
CONTEXT_CHARS = 150  # each side of a mention: about 40-60 tokens, under the 64-token window
ENTITY_EVERY = 9  # one (entity, language) line in nine: about one language per entity
ALIAS_EVERY = 4


def mention_window(text: str, start: int, end: int) -> str:
    left = text[max(0, start - CONTEXT_CHARS):start]
    right = text[end:end + CONTEXT_CHARS]
    return f"{left}[M]{text[start:end]}[M]{right}".replace("\n", " ")


def mewsli_windows() -> list[str]:
    out = []
    for lang_dir in sorted(p for p in (HERE / "mewsli9-sample").iterdir() if p.is_dir()):
        with open(lang_dir / "mentions.tsv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                text = (lang_dir / "text" / row["docid"]).read_text(encoding="utf-8")
                start = int(row["position"])
                out.append(mention_window(text, start, start + int(row["length"])))
    return out


def corpus_windows() -> list[str]:
    out = []
    for line in (HERE / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for mention in record.get("mentions", []):
            out.append(mention_window(record["text"], mention["start"], mention["end"]))
        if "[M]" in record["text"]:
            out.append(record["text"])  # inline markers are already the window format
    return out


def calibration_jsonl() -> str:
    records = [{"role": "mention", "text": t} for t in mewsli_windows() + corpus_windows()]
    kb = [json.loads(line) for line in (HERE / "kb.jsonl").read_text(encoding="utf-8").splitlines()]
    records += [{"role": "entity", "text": f"[M]{e['label']}[M] {e['description']}"} for e in kb[::ENTITY_EVERY]]
    aliases = [alias for e in kb for alias in e.get("aliases", [])]
    records += [{"role": "mention", "text": alias} for alias in aliases[::ALIAS_EVERY]]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main() -> None:
    text = calibration_jsonl()
    if "--check" in sys.argv[1:]:
        if OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT.relative_to(HERE.parent)} is stale: run python examples/make_calibration.py")
        return
    OUT.write_text(text, encoding="utf-8")
    print(f"{OUT.relative_to(HERE.parent)}: {text.count(chr(10))} texts")


if __name__ == "__main__":
    main()
