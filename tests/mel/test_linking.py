"""`mel link`: golden multilingual linking, pipes, zstd, inline markers, bad input, order, NIL."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import zstandard
from click.testing import CliRunner

from mel.cli import main
from mel.linking import LinkOptions, link_documents
from mel.rankers import RetrieverRanker
from mel.retrieval import EncoderSettings, Retriever
from mel.streams import JsonlWriter

KB = [
    ("Q90", "en", "Paris", "capital and largest city of France"),
    ("Q47899", "en", "Paris Hilton", "American media personality"),
    ("Q64", "en", "Berlin", "capital of Germany"),
    ("Q1490", "ja", "東京都", "日本の首都"),
    ("Q1490", "en", "Tokyo", "capital of Japan"),
    ("Q142", "es", "Francia", "país de Europa occidental"),
    ("Q183", "de", "Deutschland", "Staat in Mitteleuropa"),
    ("Q17", "ja", "日本", "東アジアの国"),
    ("Q79", "ar", "مصر", "دولة في شمال أفريقيا"),
    ("Q312", "en", "Apple Inc.", "American technology company"),
    ("Q89", "en", "apple", "fruit of the apple tree"),
]

CORPUS = [
    {"id": "es1", "lang": "es", "text": "El presidente viajó a Francia y luego a Alemania.",
     "mentions": [{"start": 22, "end": 29, "qid": "Q142"}]},
    {"id": "de1", "lang": "de", "text": "Die Regierung in Berlin hat entschieden.",
     "mentions": [{"start": 17, "end": 23}]},
    {"id": "ja1", "lang": "ja", "text": "日本の首都は東京都です。",
     "mentions": [{"start": 0, "end": 2}, {"start": 6, "end": 9}]},
    {"id": "ar1", "lang": "ar", "text": "زار الوزير مصر أمس.", "mentions": [{"start": 11, "end": 14}]},
    {"id": "en1", "lang": "en", "note": "kept", "text": "She landed in [M]Paris[M] on Monday."},
]
EXPECTED = {"es1": ["Q142"], "de1": ["Q64"], "ja1": ["Q17", "Q1490"], "ar1": ["Q79"], "en1": ["Q90"]}


@pytest.fixture(scope="module")
def label_index(default_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("link")
    kb = folder / "kb.jsonl"
    kb.write_text("".join(json.dumps({"qid": q, "lang": lang, "label": label, "description": d}) + "\n"
                          for q, lang, label, d in KB))
    result = CliRunner().invoke(main, ["index", "build", "--kb", str(kb), "--kinds", "label", "-o",
                                       str(folder / "idx"), "-q"])
    assert result.exit_code == 0, result.output
    return folder / "idx"


def write_corpus(path, records=CORPUS):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def read_lines(data: bytes):
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def test_golden_multilingual_links(label_index, tmp_path):
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(write_corpus(tmp_path / "in.jsonl")), "--index", str(label_index),
                                       "-o", str(out), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    records = read_lines(out.read_bytes())
    assert [r["id"] for r in records] == [r["id"] for r in CORPUS]
    for record in records:
        assert [m["qid"] for m in record["mentions"]] == EXPECTED[record["id"]], record
        for mention in record["mentions"]:
            assert len(mention["candidates"]) == 3
            top = mention["candidates"][0]
            assert (top["qid"], top["score"]) == (mention["qid"], mention["score"]) and top["views"]
    assert records[0]["mentions"][0]["gold_qid"] == "Q142"  # gold kept, never overwritten
    assert records[4]["text"] == "She landed in Paris on Monday."  # inline markers removed
    assert records[4]["mentions"][0]["start"] == 14 and records[4]["note"] == "kept"
    assert "5 documents, 6 mentions, 6 linked, 0 NIL, 0 errors" in result.output


def test_zstd_in_by_content_and_out_by_name(label_index, tmp_path):
    source = tmp_path / "in.data"  # no .zst extension: detected by magic bytes
    source.write_bytes(zstandard.ZstdCompressor().compress(write_corpus(tmp_path / "plain.jsonl").read_bytes()))
    out = tmp_path / "out.jsonl.zst"
    result = CliRunner().invoke(main, ["link", str(source), "--index", str(label_index), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    records = read_lines(zstandard.ZstdDecompressor().stream_reader(out.open("rb")).read())
    assert [m["qid"] for r in records for m in r["mentions"]] == [q for r in CORPUS for q in EXPECTED[r["id"]]]


def test_a_zst_name_over_other_bytes_and_a_folder_that_is_no_index_are_one_error_each(label_index, tmp_path):
    broken = tmp_path / "corpus.jsonl.zst"
    broken.write_bytes(bytes(range(128, 256)))  # neither zstd nor text
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(broken), "--index", str(label_index), "-o", str(out), "-q"])
    assert result.exit_code == 1 and not out.exists()
    errors = [line for line in result.stderr.splitlines() if not line.startswith("mel: note:")]
    assert errors == [f"mel: error: {broken}: named as zstd data, but it is neither zstd data nor text "
                      "(corrupt, or renamed)"]
    result = CliRunner().invoke(main, ["link", str(write_corpus(tmp_path / "plain.jsonl")), "--index", str(tmp_path),
                                       "-o", str(out), "-q"])
    assert result.exit_code == 1 and not out.exists()
    assert result.stderr == f"mel: error: {tmp_path}: not a mel index (no manifest.json in it)\n"


def test_stdin_to_stdout_pipeline_in_a_real_process(label_index, tmp_path):
    data = write_corpus(tmp_path / "in.jsonl").read_bytes()
    done = subprocess.run([sys.executable, "-m", "mel", "link", "-", "--index", str(label_index), "-q"],
                          input=data, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert [r["id"] for r in read_lines(done.stdout)] == [r["id"] for r in CORPUS]


@pytest.mark.slow
def test_broken_pipe_ends_quietly(label_index, tmp_path):
    many = write_corpus(tmp_path / "in.jsonl", CORPUS * 400).read_bytes()
    shell = f"{sys.executable} -m mel link - --index {label_index} | head -n 2"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], input=many, capture_output=True,
                          timeout=300)
    assert len(done.stdout.decode().splitlines()) == 2
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, done.stderr.decode()
    assert done.returncode == 0


BAD_LINES = [
    (b'{"id": "b1", "text": "no closing brace"', "line 2: not valid JSON"),
    (b'{"id": "b2", "mentions": []}', "line 3: missing field 'text'"),
    (b'{"id": "b3", "text": "short", "mentions": [{"start": 2, "end": 40}]}',
     "line 4: mention 1: span 2-40 outside text of 5 characters"),
    (b'{"id": "b4", "text": "short", "mentions": [{"start": 3, "end": 3}]}', "line 5: mention 1: start >= end"),
    ('{"id": "b5", "text": "caf\xe9"}'.encode("latin-1"), "line 6: invalid UTF-8"),
]


def test_bad_records_pass_through_with_errors_and_exit_3(label_index, tmp_path):
    good = json.dumps(CORPUS[1]).encode()
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(b"\n".join([good] + [line for line, _ in BAD_LINES] + [good]) + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(source), "--index", str(label_index), "-o", str(out)])
    assert result.exit_code == 3, result.output
    records = read_lines(out.read_bytes())
    assert len(records) == 7
    assert records[0]["mentions"][0]["qid"] == "Q64" and records[6]["mentions"][0]["qid"] == "Q64"
    for record, (_, message) in zip(records[1:6], BAD_LINES):
        assert message.split(": ", 1)[1].split(" (")[0] in record["error"]
        assert f"error: {message}" in result.output
    assert records[2] == {"id": "b2", "mentions": [], "error": "missing field 'text'"}  # passed through unchanged
    assert "2 documents, 2 mentions, 2 linked, 0 NIL, 5 errors" in result.output

    errors = tmp_path / "errors.jsonl"
    result = CliRunner().invoke(main, ["link", str(source), "--index", str(label_index), "-o", str(out),
                                       "--errors", str(errors), "-q"])
    assert result.exit_code == 3
    assert len(read_lines(out.read_bytes())) == 2 and len(read_lines(errors.read_bytes())) == 5

    strict_out = tmp_path / "strict.jsonl"
    result = CliRunner().invoke(main, ["link", str(source), "--index", str(label_index), "-o", str(strict_out),
                                       "--strict"])
    assert result.exit_code == 3
    assert "mel: error: line 2: not valid JSON" in result.output and "--strict" in result.output
    assert not strict_out.exists()  # no truncated output that looks complete
    assert not list(tmp_path.glob(".strict.jsonl.*"))


def test_empty_documents_and_no_mentions_pass_through(label_index, tmp_path):
    records = [{"id": "e", "text": "", "mentions": []}, {"id": "n", "lang": "en", "text": "Nothing here.",
                                                        "mentions": []}]
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(write_corpus(tmp_path / "in.jsonl", records)), "--index",
                                       str(label_index), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert read_lines(out.read_bytes()) == records


def test_order_is_kept_across_many_small_chunks(label_index, tmp_path):
    records = [dict(CORPUS[i % 4], id=f"doc{i}") for i in range(300)]
    ranker = RetrieverRanker(Retriever.open(label_index / "views" / "string", EncoderSettings(batch_size=3)))
    sink = io.BytesIO()

    class Sink(JsonlWriter):
        def __init__(self):
            self.broken_pipe, self.count, self._closed = False, 0, False
            self._stream = sink

    stats = link_documents(str(write_corpus(tmp_path / "in.jsonl", records)), ranker, Sink(),
                           options=LinkOptions(chunk_size=5, top_k=2))
    out = read_lines(sink.getvalue())
    assert [r["id"] for r in out] == [f"doc{i}" for i in range(300)]
    assert [m["qid"] for r in out for m in r["mentions"]] == \
        [q for i in range(300) for q in EXPECTED[CORPUS[i % 4]["id"]]]
    assert stats.documents == 300


def test_min_score_makes_nil(label_index, tmp_path):
    # The fused linker's scores are probabilities, below 0.999 for every mention here.
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(write_corpus(tmp_path / "in.jsonl")), "--index",
                                       str(label_index), "-o", str(out), "--min-score", "0.999"])
    assert result.exit_code == 0, result.output
    mentions = [m for r in read_lines(out.read_bytes()) for m in r["mentions"]]
    assert all(m["qid"] is None and m["score"] < 0.999 and m["candidates"] for m in mentions)
    assert "6 mentions, 0 linked, 6 NIL" in result.output


def test_min_score_on_cosines_is_batch_independent(label_index, tmp_path):
    # The six mentions are spelled as labels, and the int8 encoder embeds a string the same
    # in any batch, so they score 1 against their label; a near-miss spelling stays below.
    near = {"id": "en2", "lang": "en", "text": "A week in Pariss.", "mentions": [{"start": 10, "end": 16}]}
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(write_corpus(tmp_path / "in.jsonl", CORPUS + [near])), "--index",
                                       str(label_index), "--method", "labels", "-o", str(out),
                                       "--min-score", "0.9999"])
    assert result.exit_code == 0, result.output
    mentions = [m for r in read_lines(out.read_bytes()) for m in r["mentions"]]
    assert all(m["candidates"] and (m["qid"] is None) == (m["score"] < 0.9999) for m in mentions)
    assert [m["score"] >= 0.99999 for m in mentions] == [True] * 6 + [False]
    assert "7 mentions, 6 linked, 1 NIL" in result.output


def test_encoding_on_its_own_stage_links_the_same(label_index, tmp_path, monkeypatch):
    # On CUDA the encoder runs as a pipeline stage of its own; here it is forced on CPU.
    plain, staged = tmp_path / "plain.jsonl", tmp_path / "staged.jsonl"
    corpus = str(write_corpus(tmp_path / "in.jsonl"))
    # (the retriever methods run on RetrieverRanker; tests/mel/linker holds the fused linker's twin)
    args = ["link", corpus, "--index", str(label_index), "--method", "labels", "-o"]
    assert CliRunner().invoke(main, [*args, str(plain)]).exit_code == 0
    staged_calls = []

    def stage(self):
        def encode(ids):
            staged_calls.append(len(ids))
            return self.retriever.encode(ids)
        return encode

    monkeypatch.setattr(RetrieverRanker, "encode_stage", property(stage))
    assert CliRunner().invoke(main, [*args, str(staged)]).exit_code == 0
    assert sum(staged_calls) == 6  # every mention went through the encoder stage
    assert staged.read_bytes() == plain.read_bytes()
