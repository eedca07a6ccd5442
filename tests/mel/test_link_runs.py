"""Beyond one process without an engine: the Python API, several inputs, `--shard I/N` and `mel link merge`."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

import mel
from mel.cli import main
from mel.link_runs import Shard, expand_inputs, owned_records, read_run
from tests.mel.link_corpus import (
    LINKER_TOL,
    assert_same_records,
    build_label_index,
    corpus_lines,
    read_records,
    write_lines,
)


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    index = build_label_index(tiny_model, folder)
    lines = corpus_lines(2000)
    corpus = write_lines(folder / "corpus.jsonl", lines)
    plain = folder / "plain.jsonl"
    result = CliRunner().invoke(main, ["link", str(corpus), "--index", str(index), "--precision", "fp32", "-o",
                                       str(plain)])
    assert result.exit_code == 3, result.output  # the corpus has bad lines
    return {"model": tiny_model, "index": index, "corpus": corpus, "lines": lines, "plain": plain,
            "folder": folder, "output": result.output}


def link(*args):
    return CliRunner().invoke(main, ["link", *map(str, args)])


def test_python_api_on_dicts_and_lines_equals_the_cli(setup):
    inputs = [json.loads(line) if line.startswith(b'{"id": "d') else line.decode() for line in setup["lines"]]
    assert any(isinstance(i, dict) for i in inputs) and any(isinstance(i, str) for i in inputs)
    linker = mel.Linker.open(setup["index"], precision="fp32")
    records = list(linker.link(inputs))
    assert records == read_records(setup["plain"])  # the same records, errors included, bit for bit
    assert f'{sum("error" in r for r in records)} errors' in setup["output"]
    # An early stop leaves no pipeline thread behind.
    for _ in zip(range(3), linker.link(inputs)):
        pass
    assert not [t for t in threading.enumerate() if t.name in ("mel-prepare", "mel-rank") and t.is_alive()]


def test_python_api_embed_and_search_answer_like_the_linker(setup):
    model = mel.load_model(setup["model"], precision="fp32")
    vectors = model.embed(["paris", "london"], role="mention")
    assert vectors.shape == (2, model.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    hits = mel.open_index(setup["index"], view="string").search(vectors, k=3)
    linked = mel.Linker.open(setup["index"], precision="fp32", top_k=3, method="labels").link(
        [{"text": "paris london", "mentions": [{"start": 0, "end": 5}, {"start": 6, "end": 12}]}])
    mentions = next(linked)["mentions"]
    assert [m["qid"] for m in mentions] == [f"Q{q}" for q in hits.qids[:, 0]]
    assert [m["score"] for m in mentions] == pytest.approx(hits.scores[:, 0].tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="role"):
        model.embed(["x"], role="query")


def test_python_api_opens_the_fused_linker_with_the_clis_options(setup, tmp_path):
    docs = [json.loads(line) for line in setup["lines"][:40] if line.startswith(b'{"id": "d')]
    source = write_lines(tmp_path / "docs.jsonl", [json.dumps(d).encode() for d in docs])
    out = tmp_path / "out.jsonl"
    result = link(source, "--index", setup["index"], "--precision", "fp32", "--min-prob", 0.9, "--explain", "-o", out)
    assert result.exit_code == 0, result.output
    linker = mel.Linker.open(setup["index"], precision="fp32", min_prob=0.9, explain=True)
    assert linker.describe()["method"] == "linker" and linker.ranker.name == "linker"
    records = list(linker.link(docs))
    assert records == read_records(out)
    mentions = [m for r in records for m in r["mentions"]]
    assert all("features" in c for m in mentions for c in m["candidates"])
    assert any(m["qid"] is None for m in mentions) and all(m["score"] >= 0.9 for m in mentions if m["qid"])
    with pytest.raises(mel.errors.InputError, match="min_prob needs method 'linker'"):
        mel.Linker.open(setup["index"], method="labels", min_prob=0.5)


def test_shards_of_one_input_merged_equal_the_unsharded_run(setup, tmp_path):
    runs = [tmp_path / f"run{i}" for i in range(3)]
    for i, run in enumerate(runs):
        result = link(setup["corpus"], "--index", setup["index"], "--precision", "fp32", "--shard", f"{i}/3",
                      "--shard-docs", 150, "-o", run, "-q")
        assert result.exit_code == 3, result.output  # each shard holds some bad lines
    manifests = [read_run(run) for run in runs]
    total = manifests[0].inputs[0].records
    assert total == sum(1 for line in setup["lines"] if line.strip())
    held = [sum(p.records for p in m.parts) for m in manifests]
    assert sum(held) == total and all(h > 0 for h in held)
    assert [r.first for r in manifests[1].parts[0].runs] == [lo for lo, _ in owned_records(total, Shard(1, 3), 150)]
    merged = tmp_path / "merged.jsonl.zst"
    result = link("merge", *runs, "-o", merged)
    assert result.exit_code == 0, result.output
    assert_same_records(read_records(merged), read_records(setup["plain"]), tol=LINKER_TOL)
    errors = tmp_path / "errors.jsonl"
    assert link("merge", *runs[::-1], "-o", tmp_path / "good.jsonl", "--errors", errors).exit_code == 0
    assert [r["error"] for r in read_records(errors)] == [r["error"] for r in read_records(setup["plain"])
                                                          if "error" in r]
    assert len(read_records(tmp_path / "good.jsonl")) + len(read_records(errors)) == total


def test_several_inputs_are_sharded_by_file_and_merge_in_order(setup, tmp_path):
    lines = setup["lines"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_lines(inputs / "a.jsonl", lines[:300])
    (inputs / "b.jsonl").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines[300:700]) + b"\n"))
    write_lines(inputs / "c.jsonl", lines[700:800])
    (inputs / ".hidden").write_text("not an input")
    assert [p.rsplit("/", 1)[1] for p in expand_inputs([str(inputs)])] == ["a.jsonl", "b.jsonl", "c.jsonl"]
    plain = tmp_path / "plain.jsonl"
    result = link(inputs, "--index", setup["index"], "--precision", "fp32", "-o", plain)
    assert result.exit_code == 3 and f"{inputs}/b.jsonl: line " in result.output  # messages name the input
    runs = [tmp_path / f"run{i}" for i in range(2)]
    for i, run in enumerate(runs):
        result = link(f"{inputs}/*.jsonl", "--index", setup["index"], "--precision", "fp32", "--shard", f"{i}/2",
                      "-o", run, "--compress", "-q")
        assert result.exit_code == 3, result.output
    assert [p.name.rsplit("/", 1)[1] for p in read_run(runs[0]).parts] == ["part-00000-000000000000.jsonl.zst",
                                                                          "part-00002-000000000000.jsonl.zst"]
    merged = tmp_path / "merged.jsonl"
    assert link("merge", *runs, "-o", merged).exit_code == 0
    assert_same_records(read_records(merged), read_records(plain), tol=LINKER_TOL)


def test_merge_refuses_what_does_not_add_up_and_writes_nothing(setup, tmp_path):
    runs = [tmp_path / f"run{i}" for i in range(2)]
    for i, run in enumerate(runs):
        link(setup["corpus"], "--index", setup["index"], "--shard", f"{i}/2", "--shard-docs", 500, "-o", run, "-q")
    out = tmp_path / "merged.jsonl"
    result = link("merge", runs[0], "-o", out)
    assert result.exit_code == 1 and "mel: error: shards missing: 1/2" in result.output
    result = link("merge", runs[0], runs[0], "-o", out)
    assert result.exit_code == 1 and "given twice: 0/2" in result.output
    part = runs[1] / read_run(runs[1]).parts[0].name
    data = bytearray(part.read_bytes())
    data[10] ^= 1
    part.write_bytes(bytes(data))
    result = link("merge", *runs, "-o", out)
    assert result.exit_code == 1 and f"mel: error: {part}: checksum mismatch" in result.output
    part.unlink()
    result = link("merge", *runs, "-o", out)
    assert result.exit_code == 1 and "part file not found" in result.output
    assert not out.exists() and not list(tmp_path.glob(".merged.jsonl*"))
    assert "Traceback" not in result.output


def test_usage_errors_name_the_option(setup, tmp_path):
    result = link(setup["corpus"], "--index", setup["index"], "--shard", "3/3", "-o", tmp_path / "r")
    assert result.exit_code == 1 and "--shard 3/3: I must be 0 to N-1" in result.output
    result = link(setup["corpus"], "--index", setup["index"], "--shard", "0/2")
    assert result.exit_code == 2 and "give it with -o" in result.output
    result = link(setup["corpus"], "--index", setup["index"], "--workers", 2)
    assert result.exit_code == 2 and "--workers: for --engine ray" in result.output
    result = link(setup["corpus"], setup["corpus"], "--index", setup["index"])
    assert result.exit_code == 1 and "given twice" in result.output
    result = link(tmp_path / "nothing*.jsonl", "--index", setup["index"])
    assert result.exit_code == 1 and "no file matches" in result.output
