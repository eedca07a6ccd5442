"""`mel index build | info | verify` over KB sources, with the tiny model (fast) and real ScaNN."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.encoding import Encoder
from mel.errors import InputError
from mel.indexes.searcher import Index
from mel.indexing import KBSelection, pending_entries, view_kinds
from mel.linker.folder import table_path, view_path
from mel.mentions import MentionSpan
from mel.models import ModelFolder
from mel.retrieval import EncoderSettings, Retriever

DATA = "tests/data"
ROOT_DATA = Path(__file__).resolve().parents[1] / "data"


def build(*args):
    return CliRunner().invoke(main, ["index", "build", *args])


def context_view(out):
    return view_path(out, "context")


def test_damuel_and_jsonl_with_contexts_in_several_shards(tiny_model, tmp_path):
    out = tmp_path / "idx"
    result = build("--kb", f"{DATA}/damuel/es", "--kb", f"{DATA}/kb.jsonl", "--links", f"{DATA}/damuel/es",
                   "--kinds", "description,context", "--model", str(tiny_model), "-o", str(out), "--shard-size", "3",
                   "-q")
    assert result.exit_code == 0, result.output
    top = json.loads((out / "manifest.json").read_text())
    assert top["format"] == "mel.index.v2" and top["views"] == ["context"]
    assert top["tables"] == ["names", "initials", "aliases"]
    assert top["model"]["identity"] == ModelFolder.open(tiny_model).identity
    manifest = json.loads((context_view(out) / "manifest.json").read_text())
    counts = manifest["counts"]
    # 5 DaMuEL entities + 5 KB lines as descriptions; 5 wiki-origin links as contexts.
    assert counts["by_kind"] == {"description": 10, "context": 5}
    assert counts["entries"] == 15 and len(manifest["shards"]) == 5
    assert counts["by_kind_language"]["context"] == {"es": 5}
    assert manifest["query_encoding"] == "context"
    assert "left out 1: link with origin 'damuel' (not selected)" in result.output
    assert "context view: 15 entries of" in result.output
    assert "aliases table: " in result.output


def test_entries_of_one_qid_collapse_to_the_best(tiny_model, tmp_path):
    out = tmp_path / "idx"
    assert build("--kb", f"{DATA}/damuel/es", "--links", f"{DATA}/damuel/es", "--model", str(tiny_model),
                 "-o", str(out), "--shard-size", "2", "-q").exit_code == 0
    retriever = Retriever.open(context_view(out), EncoderSettings(model=str(tiny_model), precision="fp32"))
    index = retriever.index
    # Query with the stored vector of a context entry of Q183 (Alemania, which has two contexts).
    kinds = [index.entry(i).kind for i in range(len(index))]
    qids = index.entry_qids(np.arange(len(index)))
    context_rows = [i for i in range(len(index)) if kinds[i] == "context" and qids[i] == 183]
    assert len(context_rows) == 2
    result = index.search(index.vectors(np.array(context_rows[:1])), k=5, exact=True)
    found = [q for q in result.qids[0] if q >= 0]
    assert len(found) == len(set(found)) == 5  # one row per QID (Q183 has 3 entries: 2 contexts, 1 description)
    assert list(result.scores[0]) == sorted(result.scores[0], reverse=True)
    at = found.index(183)
    assert result.entry_ids[0][at] == context_rows[0]  # the best of its entries: the query's own vector
    assert np.isclose(result.scores[0][at], 1.0, atol=1e-5)


def test_malformed_kb_is_reported_line_by_line(tiny_model, tmp_path):
    kb = tmp_path / "bad.jsonl"
    kb.write_text("\n".join([
        '{"qid": "Q90", "lang": "en", "label": "Paris", "description": "capital of France"}',
        '{"qid": "Q64", "lang": "en", "label": "Berlin"',
        '{"lang": "en", "label": "no id", "description": "x"}',
        '{"qid": "P31", "lang": "en", "label": "instance of", "description": "property"}',
        '{"qid": "Q1", "lang": "en", "label": "", "description": ""}',
        '{"qid": "Q2", "lang": "en", "label": "Earth", "description": "planet"}',
    ]) + "\n")
    result = build("--kb", str(kb), "--model", str(tiny_model), "-o", str(tmp_path / "idx"), "-q")
    assert result.exit_code == 0, result.output
    for line in (2, 3, 4, 5):
        assert f"{kb}:{line}: " in result.output
    assert "context view: 2 entries of 2 QIDs" in result.output and "string view: 2 entries of 2 QIDs" in result.output

    strict = build("--kb", str(kb), "--model", str(tiny_model), "-o", str(tmp_path / "idx2"), "-q", "--strict")
    assert strict.exit_code == 1
    assert f"mel: error: {kb}:2: " in strict.output
    assert not (tmp_path / "idx2").exists()


def test_label_kind_is_the_string_view_queried_with_strings(tiny_model, tmp_path):
    assert view_kinds(["label"]) == {"string": ("label",)}
    assert view_kinds(["description", "label", "context"]) == {"string": ("label",),
                                                               "context": ("description", "context")}
    with pytest.raises(InputError, match="unknown entry kind"):
        view_kinds(["alias"])
    entries = list(pending_entries(KBSelection(kb=[f"{DATA}/kb.jsonl"], kinds=("label",))))
    # A label entry keeps the name itself as its label (the linker compares mentions with it).
    assert [(e.qid, e.text, e.label) for e in entries if e.qid == "Q90"] == [
        ("Q90", "Paris", "Paris"), ("Q90", "City of Light", "City of Light")]
    result = build("--kb", f"{DATA}/kb.jsonl", "--kinds", "label", "--model", str(tiny_model),
                   "-o", str(tmp_path / "labels"), "-q")
    assert result.exit_code == 0, result.output
    view = view_path(tmp_path / "labels", "string")
    retriever = Retriever.open(view, EncoderSettings(model=str(tiny_model), precision="fp32"))
    assert retriever.query_encoding == "string"
    text = "we met in paris"
    ids = retriever.query_ids([MentionSpan(text, 10, 15)])[0]
    assert ids == Encoder(ModelFolder.open(tiny_model), precision="fp32").tokens.strings(["paris"])[0]
    assert (table_path(tmp_path / "labels", "names") / "manifest.json").is_file()


@pytest.mark.scann
def test_info_and_verify_and_a_flipped_byte(tiny_model, tmp_path):
    out = tmp_path / "idx"
    assert build("--kb", f"{DATA}/kb.jsonl", "--model", str(tiny_model), "-o", str(out), "--shard-size", "2",
                 "-q").exit_code == 0
    info = CliRunner().invoke(main, ["index", "info", str(out)])
    assert info.exit_code == 0 and "description" in info.output and "shard-00002" in info.output
    assert "names (" in info.output and "the default shipped with mel" in info.output
    as_json = json.loads(CliRunner().invoke(main, ["index", "info", str(out), "--json"]).output)
    assert as_json["views"] == ["string", "context"]
    context = as_json["view_info"]["context"]
    assert context["entries"] == 5 and context["languages"] == {"de": 1, "en": 3, "ja": 1}
    ok = CliRunner().invoke(main, ["index", "verify", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "matches" in ok.output and "OK" in ok.output
    vectors = context_view(out) / "shard-00001" / "scann" / "dataset.npy"
    data = bytearray(vectors.read_bytes())
    data[-3] ^= 0x01
    vectors.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["index", "verify", str(out)])
    assert bad.exit_code == 1
    assert f"{vectors}: checksum mismatch" in bad.output
    # The initials table is checked like every other part.
    assert "initials (" in info.output
    qids = table_path(out, "initials") / "qids.npy"
    data = bytearray(qids.read_bytes())
    data[-1] ^= 0x01
    qids.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["index", "verify", str(out)])
    assert bad.exit_code == 1 and f"{qids}: checksum mismatch" in bad.output


def test_a_different_model_is_refused_unless_allowed(tiny_model, tmp_path):
    from mel.exporters.model_folder import export_checkpoint
    from tests.conftest import make_tiny_checkpoint

    other = tmp_path / "other"
    export_checkpoint(str(make_tiny_checkpoint(tmp_path / "ckpt", seed=7)), other, precisions=("fp32",))
    out = tmp_path / "idx"
    assert build("--kb", f"{DATA}/kb.jsonl", "--model", str(tiny_model), "-o", str(out), "-q").exit_code == 0
    with pytest.raises(Exception, match="allow-model-mismatch"):
        Retriever.open(context_view(out), EncoderSettings(model=str(other)))
    assert Retriever.open(context_view(out), EncoderSettings(model=str(other)),
                          allow_model_mismatch=True).index.dim == 32
    verify = CliRunner().invoke(main, ["index", "verify", str(out), "--model", str(other)])
    assert verify.exit_code == 1 and "differs from the index" in verify.output


def test_resume_continues_an_interrupted_build(tiny_model, tmp_path, monkeypatch):
    import mel.indexing as indexing

    out = tmp_path / "idx"
    real = indexing.encode_entries
    calls = {"n": 0}

    def failing(encoder, entries):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(encoder, entries)

    monkeypatch.setattr(indexing, "encode_entries", failing)
    common = ["--kb", f"{DATA}/kb.jsonl", "--kb", f"{DATA}/damuel/es", "--model", str(tiny_model),
              "--shard-size", "2", "--batch-size", "2", "-q"]
    args = [*common, "-o", str(out)]
    interrupted = build(*args)
    assert interrupted.exit_code != 0 and not out.exists()
    monkeypatch.setattr(indexing, "encode_entries", real)
    resumed = build(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    fresh = tmp_path / "fresh"
    assert build(*common, "-o", str(fresh)).exit_code == 0
    a, b = Index(context_view(out)), Index(context_view(fresh))
    assert len(a) == len(b) == 10
    assert np.allclose(a.vectors(np.arange(10)), b.vectors(np.arange(10)), atol=1e-6)
    assert list(a.entry_qids(np.arange(10))) == list(b.entry_qids(np.arange(10)))


def test_a_build_stopped_after_the_kb_was_read_through_resumes(tiny_model, tmp_path, monkeypatch):
    """The reader's skip report is filled once the KB is read; it must not make resuming impossible."""
    import mel.indexes.builder as builder

    kb = tmp_path / "kb.jsonl"
    kb.write_text((ROOT_DATA / "kb.jsonl").read_text() + "{not json\n")
    out = tmp_path / "idx"
    args = ["--kb", str(kb), "--model", str(tiny_model), "--exact", "-o", str(out), "-q"]
    real = builder.file_records

    def stop_at_the_checksums(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "file_records", stop_at_the_checksums)
    assert build(*args).exit_code != 0 and not out.exists()
    monkeypatch.setattr(builder, "file_records", real)
    resumed = build(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["skipped"] == {"not valid JSON": 1}
    fresh = tmp_path / "fresh"
    assert build(*args[:-3], "-o", str(fresh), "-q").exit_code == 0
    assert json.loads((fresh / "manifest.json").read_text())["skipped"] == manifest["skipped"]


def test_when_every_kb_record_is_skipped_the_error_says_why_and_nothing_stays(tiny_model, tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text('{not json\n{"qid": "P31", "lang": "en", "label": "x"}\n')
    out = tmp_path / "idx"
    result = build("--kb", str(kb), "--model", str(tiny_model), "--exact", "-o", str(out), "-q")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mel: error: no entries: every KB record was skipped")
    assert "not valid JSON" in lines[0] and "not a Wikidata item id" in lines[0] and f"{kb}:1" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb.jsonl"]  # no index, no .idx.partial


def test_a_kb_qid_beyond_int64_is_a_bad_line_not_a_crash(tiny_model, tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text('{"qid": "Q9223372036854775808", "lang": "en", "label": "Too big"}\n'
                  + (ROOT_DATA / "kb.jsonl").read_text())
    out = tmp_path / "idx"
    result = build("--kb", str(kb), "--model", str(tiny_model), "--exact", "-o", str(out))
    assert result.exit_code == 0, result.output  # it used to end in an OverflowError traceback
    assert "skipped 1 record(s): not a Wikidata item id" in result.stderr
    assert f"e.g. {kb}:1: not a Wikidata item id ('Q9223372036854775808')" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"]["skipped"] == {"not a Wikidata item id": 1}
    assert manifest["counts"]["views/context"]["entries"] == len((ROOT_DATA / "kb.jsonl").read_text().splitlines())


def interrupted_build(kb: Path, out: Path, tiny_model, monkeypatch) -> list[str]:
    """A build of `kb` stopped after its first shard, to be resumed."""
    import mel.indexing as indexing

    real, calls = indexing.encode_entries, {"n": 0}

    def failing(encoder, entries):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(encoder, entries)

    args = ["--kb", str(kb), "--model", str(tiny_model), "--shard-size", "2", "--batch-size", "2", "--exact",
            "-o", str(out), "-q"]
    monkeypatch.setattr(indexing, "encode_entries", failing)
    assert build(*args).exit_code != 0 and not out.exists()
    monkeypatch.setattr(indexing, "encode_entries", real)
    return args


@pytest.mark.parametrize("change", ["appended", "same size and time", "replaced by another file"])
def test_resume_refuses_a_kb_that_changed(tiny_model, tmp_path, monkeypatch, change):
    kb = tmp_path / "kb.jsonl"
    kb.write_text((ROOT_DATA / "kb.jsonl").read_text())
    args = interrupted_build(kb, tmp_path / "idx", tiny_model, monkeypatch)
    stat = kb.stat()
    if change == "appended":
        kb.write_text(kb.read_text() + '{"qid": "Q5", "lang": "en", "label": "human"}\n')
    elif change == "same size and time":
        kb.write_text(kb.read_text().replace('"Paris"', '"Parys"'))
        os.utime(kb, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        replacement = tmp_path / "new.jsonl"
        replacement.write_text(kb.read_text().replace('"Berlin"', '"Bremen"'))  # as long as before
        replacement.replace(kb)
    result = build(*args, "--resume")
    assert result.exit_code == 1  # it used to succeed, mixing old and new entries
    what = "size" if change == "appended" else "content"
    assert result.output == (f"mel: error: {tmp_path}/.idx.partial/views/.string.partial: cannot resume: --kb {kb} "
                             f"changed since the unfinished build (its {what} differs); build again without "
                             "--resume to start over\n")
    assert build(*args).exit_code == 0  # starting over works


def test_resume_with_an_unchanged_kb_goes_on(tiny_model, tmp_path, monkeypatch):
    kb = tmp_path / "kb.jsonl"
    kb.write_text((ROOT_DATA / "kb.jsonl").read_text())
    args = interrupted_build(kb, tmp_path / "idx", tiny_model, monkeypatch)
    os.utime(kb)  # touched, same bytes: a file hashed whole is compared by content
    result = build(*args, "--resume")
    assert result.exit_code == 0, result.output


def test_big_sources_are_fingerprinted_by_sampled_blocks(tmp_path, monkeypatch):
    from mel import artifacts

    monkeypatch.setattr(artifacts, "_WHOLE_HASH_BYTES", 1 << 20)
    monkeypatch.setattr(artifacts, "_BLOCK_BYTES", 1 << 12)
    path = tmp_path / "big.jsonl"
    path.write_bytes(bytes(range(256)) * (8 << 12))  # 8 MiB: 64 sampled blocks of 4 KiB
    before = artifacts.fingerprint(path)
    assert before["hashed"] == "64 sampled blocks of 4096 bytes"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # in the last block, which is always sampled
    stamp = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert "content differs" in artifacts.fingerprint_change("kb", before, artifacts.fingerprint(path))
    path.write_bytes(bytes(range(256)) * (8 << 12))
    assert "modification time differs" in artifacts.fingerprint_change("kb", before, artifacts.fingerprint(path))
