"""Record the reference token ids that tests/exporters/test_e5_tokenizer.py pins.

Run once, with the Hugging Face tokenizer.json of intfloat/multilingual-e5-small
(the reference; it is not a dependency of mel):

    python tests/data/record_e5_tokenizer_ids.py path/to/tokenizer.json

Writes tests/data/e5_tokenizer_ids.json: {"strings": [...], "ids": [[...], ...]},
ids with <s> and </s>. The strings are labels and descriptions of the sample KB in
the nine Mewsli-9 languages, sentences of the Mewsli-9-format sample, and edge
cases: decomposed accents, compatibility characters, emoji, repeated and odd spaces.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "e5_tokenizer_ids.json"
LANGUAGES = ("ar", "de", "en", "es", "fa", "ja", "sr", "ta", "tr")
PER_LANGUAGE = 24

EDGE_CASES = [
    "",
    " ",
    "a",
    "Hello world",
    "  leading and trailing  ",
    "repeated    spaces   inside",
    "tab\tand\nnewline\r\nend",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    "zero\u200bwidth\u200cjoiner\u200dand\ufeffbom",
    "Cafe\u0301 vs Café",  # decomposed and composed é
    unicodedata.normalize("NFD", "Ærøskøbing, Ñuñoa, Łódź, İzmir, Dvořák"),
    unicodedata.normalize("NFD", "Straße Ümlaut Øre"),
    unicodedata.normalize("NFD", "ação coração São Paulo"),
    "ﬁnance ﬂoor ﬀ",  # ligatures
    "①②③ ⑴ ⒈ ㈠",
    "ＡＢＣ　ＸＹＺ１２３！",  # full-width
    "ｶﾀｶﾅ ﾊﾝｶｸ",  # half-width katakana
    "x² H₂O ½ ™ ℃ № Ⅻ",
    "👍 👍🏽 👨‍👩‍👧 🇫🇷🇩🇪 ❤️",
    "emoji👍inside😀words",
    "<s> special </s> <mask> <unk> <pad>",
    "x<mask>y",
    "URL https://example.org/a?b=c&d=e#f",
    "e-mail name.surname@example.com",
    "numbers 3.14159 1,000,000 -42 +7e10",
    "punctuation!!! ??? ... --- «quotes» „Anführung“ 「括弧」",
    "MiXeD CaSe and ALLCAPS",
    "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629",  # Arabic with harakat
    "\u0641\u0627\u0631\u0633\u06cc \u200cهای",  # Persian ZWNJ
    "Српски језик и srpski jezik",
    "தமிழ் மொழி",
    "日本語の文章、カタカナとひらがな。",
    "Türkçe ığüşöç İI ıi",
    "a" * 300,
    "tres\u0303 n\u0303",
    "\u00e9\u0301 double accent",
    "control\u0001char\u007fdel",
]


def sample_strings() -> list[str]:
    strings = list(EDGE_CASES)
    seen = dict.fromkeys(LANGUAGES, 0)
    for line in (ROOT / "examples" / "kb.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        lang = record["lang"]
        if lang in seen and seen[lang] < PER_LANGUAGE:
            seen[lang] += 1
            strings.append(record["label"])
            if record.get("description"):
                strings.append(record["description"])
            strings.extend(record.get("aliases", [])[:1])
    for lang in LANGUAGES:
        for path in sorted((ROOT / "examples" / "mewsli9-sample" / lang / "text").iterdir())[:2]:
            text = path.read_text(encoding="utf-8")
            strings.append(text[:400])
    return list(dict.fromkeys(strings))


def main(reference: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(reference)
    strings = sample_strings()
    ids = [tokenizer.encode(s).ids for s in strings]
    OUT.write_text(json.dumps({"reference": "intfloat/multilingual-e5-small tokenizer.json",
                               "strings": strings, "ids": ids}, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(strings)} strings")


if __name__ == "__main__":
    main(sys.argv[1])
