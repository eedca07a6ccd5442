"""`mel index build --shard I/N` + `mel index assemble`, and `--engine ray`: the linker index of the local build."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import mel
from mel.cli import main
from mel.indexes.searcher import Index

DATA = "tests/data"
SOURCES = ["--kb", f"{DATA}/damuel/es", "--kb", f"{DATA}/kb.jsonl", "--links", f"{DATA}/damuel/es"]
VIEW_KEYS = ("counts", "languages", "files", "shards", "settings", "query_encoding", "entry_kinds", "sources",
             "selection", "skipped", "dim", "kinds")
DOCS = [{"id": "a", "lang": "es", "text": "Ella vive en París y trabaja en Madrid.",
         "mentions": [{"start": 13, "end": 18}, {"start": 32, "end": 38}]},
        {"id": "b", "lang": "en", "text": "Paris is in France.", "mentions": [{"start": 0, "end": 5}]}]


def build(*args):
    return CliRunner().invoke(main, ["index", "build", *SOURCES, *map(str, args)])


@pytest.fixture(scope="module")
def local(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "local"
    result = build("--model", tiny_model, "--shard-size", 4, "--batch-size", 3, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return out


def assert_same_index(got, want):
    a, b = (json.loads((folder / "manifest.json").read_text()) for folder in (got, want))
    for key in ("format", "views", "tables", "counts", "sources", "selection", "skipped", "reranker", "model"):
        assert a[key] == b[key], key
    for view in a["views"]:
        x, y = (json.loads((folder / "views" / view / "manifest.json").read_text()) for folder in (got, want))
        for key in VIEW_KEYS:
            assert x[key] == y[key], (view, key)  # every shard file's sha256 included
        assert x["model"] == y["model"]
        left, right = Index(got / "views" / view), Index(want / "views" / view)
        queries = right.vectors(np.arange(len(right)))
        found, expected = left.search(queries, k=5), right.search(queries, k=5)
        assert np.array_equal(found.qids, expected.qids) and np.array_equal(found.scores, expected.scores)
    for table in a["tables"]:
        x, y = (json.loads((folder / "tables" / table / "manifest.json").read_text()) for folder in (got, want))
        assert x["files"] == y["files"] and x["counts"] == y["counts"], table
    verify = CliRunner().invoke(main, ["index", "verify", str(got), "--sample", "20"])
    assert verify.exit_code == 0, verify.output
    linked = [list(mel.Linker.open(folder, precision="fp32", explain=True).link(DOCS)) for folder in (got, want)]
    assert linked[0] == linked[1]  # the fused linker answers alike, features included


def test_sharded_build_assembled_equals_the_local_build(tiny_model, local, tmp_path):
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        result = build("--model", tiny_model, "--shard-size", 4, "--batch-size", 3, "--shard", f"{i}/3", "-o", part)
        assert result.exit_code == 0, result.output
    manifest = json.loads((local / "views" / "string" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 4  # 14 label entries in shards of 4
    held = json.loads((parts[0] / "parts.json").read_text())
    # string shard s to job s mod 3, context shard s to job (s + 1) mod 3; the tables to job 0
    assert held["held"] == {"string": [0, 3], "context": [2]}
    assert held["held_tables"] == ["names", "initials", "aliases"]
    out = tmp_path / "idx"
    result = CliRunner().invoke(main, ["index", "assemble", *map(str, parts[::-1]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert_same_index(out, local)

    result = CliRunner().invoke(main, ["index", "assemble", str(parts[0]), str(parts[1]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "not the 3 jobs of one --shard I/N build" in result.output
    labels = next(parts[1].glob("views/*/shard-*/shard-00000/labels.json"))
    labels.write_text(labels.read_text().replace("a", "b", 1))
    result = CliRunner().invoke(main, ["index", "assemble", *map(str, parts), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "checksum mismatch" in result.output and not (tmp_path / "x").exists()


def test_assemble_refuses_parts_without_the_tables(tiny_model, tmp_path):
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):
        result = build("--model", tiny_model, "--shard-size", 8, "--shard", f"{i}/2", "-o", part, "-q")
        assert result.exit_code == 0, result.output
    data = json.loads((parts[0] / "parts.json").read_text())
    (parts[0] / "parts.json").write_text(json.dumps({**data, "held_tables": []}))
    result = CliRunner().invoke(main, ["index", "assemble", *map(str, parts), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1 and "tables missing" in result.output


@pytest.mark.ray
@pytest.mark.slow
def test_ray_build_equals_the_local_build(tiny_model, local, tmp_path, ray_local):
    out = tmp_path / "idx"
    result = build("--model", tiny_model, "--shard-size", 4, "--batch-size", 3, "--engine", "ray", "--workers", 2,
                   "-o", out)
    assert result.exit_code == 0, result.output
    assert_same_index(out, local)
    assert not list(tmp_path.glob(".idx.*"))  # the parts folder is gone
