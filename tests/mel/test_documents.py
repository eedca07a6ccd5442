import importlib.util
from pathlib import Path

import orjson
import pytest

from mel.documents import (
    BadRecord,
    error_record,
    linked_record,
    output_record,
    parse_document_line,
    read_documents,
)
from mel.records import Candidate, Document, Mention, Prediction, strip_inline_markers
from mel.streams import JsonlWriter, iter_lines

DATA = Path(__file__).resolve().parents[1] / "data"


def _fixture_maker():
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs(path=DATA / "docs.jsonl"):
    return list(read_documents(path))


def _prediction(*pairs):
    return Prediction.from_candidates([Candidate(q, s) for q, s in pairs])


def test_documents_fixture_parses():
    docs = _docs()
    assert [d.id for d in docs] == ["d1", "d2", "d3", "4"]
    assert all(isinstance(d, Document) for d in docs)
    d1 = docs[0]
    assert d1.lang == "es" and d1.line_no == 1
    assert [(d1.text[m.start : m.end], m.gold_qid) for m in d1.mentions] == [("París", "Q90"), ("Francia", "Q142")]


def test_offsets_count_code_points_with_astral_characters():
    d2 = _docs()[1]
    assert d2.text.startswith("🙂 𝔓aris")
    assert [d2.text[m.start : m.end] for m in d2.mentions] == ["Paris", "Berlin"]
    # Read as UTF-16 code units (as JavaScript or Java would) the same numbers miss.
    utf16 = d2.text.encode("utf-16-le")
    assert utf16[2 * 15 : 2 * 20].decode("utf-16-le") != "Paris"


def test_every_bad_record_reason_is_exact():
    maker = _fixture_maker()
    items = _docs(DATA / "docs_bad.jsonl")
    assert all(isinstance(item, BadRecord) for item in items)
    assert [item.reason for item in items] == [reason for _, reason in maker.DOCS_BAD]
    assert [item.line_no for item in items] == list(range(1, len(maker.DOCS_BAD) + 1))
    assert items[2].message == "line 3: mention 2: span 40-45 outside text of 30 characters"
    assert items[1].message == "line 2: missing field 'text'"


def test_bad_lines_do_not_stop_reading(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "Paris", "mentions": [{"start": 0, "end": 5}]}\n'
        b"not json\n"
        b"\n"
        b"   \n"
        b'{"id": "b", "text": "Rome", "mentions": []}\n'
    )
    items = list(read_documents(path))
    assert [type(i).__name__ for i in items] == ["Document", "BadRecord", "Document"]
    assert items[1].line_no == 2 and items[1].reason.startswith("not valid JSON")
    assert items[2].line_no == 5 and items[2].mentions == ()


def test_negative_start_and_non_integer_offsets():
    bad = parse_document_line(b'{"text": "abc", "mentions": [{"start": -1, "end": 2}]}', 1)
    assert bad.reason == "mention 1: span -1-2 outside text of 3 characters"
    bad = parse_document_line(b'{"text": "abc", "mentions": [{"start": 0, "end": 1.5}]}', 1)
    assert bad.reason == "mention 1: 'end' is not an integer: 1.5"
    bad = parse_document_line(b'{"text": "abc", "mentions": [{"start": true, "end": 2}]}', 1)
    assert bad.reason == "mention 1: 'start' is not an integer: True"
    bad = parse_document_line(b'{"text": "abc", "id": [1], "mentions": []}', 1)
    assert bad.reason == "field 'id' must be a string or an integer"


def test_overlapping_nested_and_duplicate_mentions_are_accepted():
    doc = parse_document_line(
        b'{"text": "New York City", "mentions": [{"start": 0, "end": 8}, {"start": 4, "end": 13},'
        b' {"start": 0, "end": 13}, {"start": 0, "end": 8}]}',
        1,
    )
    assert isinstance(doc, Document)
    assert [doc.text[m.start : m.end] for m in doc.mentions] == ["New York", "York City", "New York City", "New York"]


def test_inline_markers():
    d3 = _docs()[2]
    assert d3.inline
    assert "[M]" not in d3.text
    assert d3.text == "Berlin is the capital of Germany, and  Berlin  is big."
    assert [d3.text[m.start : m.end] for m in d3.mentions] == ["Germany", "Berlin"]
    text, mentions = strip_inline_markers("[M]🙂 Zürich[M] and [M]Genève[M]")
    assert text == "🙂 Zürich and Genève"
    assert [text[m.start : m.end] for m in mentions] == ["🙂 Zürich", "Genève"]


def test_marker_text_is_literal_when_mentions_are_given():
    doc = parse_document_line(b'{"text": "a [M] b", "mentions": [{"start": 0, "end": 1}]}', 1)
    assert doc.text == "a [M] b" and not doc.inline


def test_output_keeps_every_field_and_adds_predictions():
    d1, d2 = _docs()[:2]
    out = linked_record(d1, [_prediction(("Q90", 0.91234567), ("Q167646", 0.5)), _prediction(("Q142", 0.8))])
    assert list(out) == ["id", "lang", "source", "text", "mentions"]
    assert out["source"] == "fixture"
    assert out["mentions"][0] == {
        "start": 0,
        "end": 5,
        "gold_qid": "Q90",
        "qid": "Q90",
        "score": 0.912346,
        "candidates": [{"qid": "Q90", "score": 0.912346}, {"qid": "Q167646", "score": 0.5}],
    }
    out2 = linked_record(d2, [_prediction(("Q90", 0.7)), None])
    assert out2["mentions"][0]["note"] == "after astral characters"
    assert out2["mentions"][1] == {"start": 46, "end": 52, "qid": None, "score": None, "candidates": []}
    assert "gold_qid" not in out2["mentions"][1]
    # the input record itself is not modified
    assert d1.raw["mentions"][0] == {"start": 0, "end": 5, "qid": "Q90"}


def test_output_of_inline_input_has_clean_text_and_a_mentions_list():
    d3 = _docs()[2]
    out = linked_record(d3, [_prediction(("Q183", 0.9)), _prediction(("Q64", 0.8))])
    assert out["id"] == "d3" and out["meta"] == {"kept": [1, 2]}
    assert out["text"] == d3.text
    assert [(m["start"], m["end"], m["qid"]) for m in out["mentions"]] == [(25, 32, "Q183"), (39, 45, "Q64")]


def test_output_can_be_linked_again(tmp_path):
    """Linking an output again keeps the gold answer and replaces the old prediction."""
    d1 = _docs()[0]
    first = linked_record(d1, [_prediction(("Q1", 0.1)), _prediction(("Q2", 0.2))])
    path = tmp_path / "linked.jsonl.zst"
    with JsonlWriter(path) as writer:
        writer.write(first)
    again = _docs(path)[0]
    assert [m.gold_qid for m in again.mentions] == ["Q90", "Q142"]
    second = linked_record(again, [_prediction(("Q90", 0.9)), _prediction(("Q142", 0.8))])
    assert [(m["gold_qid"], m["qid"]) for m in second["mentions"]] == [("Q90", "Q90"), ("Q142", "Q142")]
    assert '"Q1"' not in orjson.dumps(second).decode()


def test_error_records():
    items = _docs(DATA / "docs_bad.jsonl")
    missing_text = error_record(items[1])
    assert missing_text == {"id": "b2", "mentions": [], "error": "missing field 'text'"}
    not_json = output_record(items[0])
    assert not_json == {
        "line": 1,
        "raw": '{"id": "b1", "text": "no closing brace"',
        "error": items[0].reason,
    }
    bad_utf8 = error_record(items[4])
    assert bad_utf8["raw"] == '{"id": "b5", "text": "caf\\xe9", "mentions": []}'
    assert bad_utf8["error"] == "invalid UTF-8 (byte 0xe9 at offset 25)"
    array = error_record(items[5])
    assert array["raw"] == '["b6", "an array"]' and array["line"] == 6


def test_one_output_line_per_input_record(tmp_path):
    path = tmp_path / "out.jsonl"
    items = _docs() + _docs(DATA / "docs_bad.jsonl")
    with JsonlWriter(path) as writer:
        for item in items:
            predictions = [] if isinstance(item, BadRecord) else [None] * len(item.mentions)
            writer.write(output_record(item, predictions))
    assert len(list(iter_lines(path))) == len(items)


def test_prediction_count_must_match():
    d1 = _docs()[0]
    with pytest.raises(ValueError, match="1 predictions for 2 mentions"):
        linked_record(d1, [None])


def test_document_json_round_trip():
    doc = Document(id="x", lang="en", text="Paris", mentions=(Mention(0, 5, "Q90"),))
    again = Document.from_json(doc.to_json())
    assert again == doc
