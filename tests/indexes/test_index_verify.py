"""verify(): checksums of every file and ScaNN recall; info(); refusing damaged indexes and pickles."""

import dataclasses
import shutil

import orjson
import pytest

from mel.artifacts import folder_size
from mel.errors import ArtifactError
from mel.indexes import Index, info, read_manifest, verify


@pytest.fixture
def index_copy(tree_index, tmp_path):
    folder = tmp_path / "index"
    shutil.copytree(tree_index.folder, folder)
    return folder


@pytest.mark.scann
def test_fresh_index_verifies(tree_index):
    report = verify(tree_index.folder, sample=300)
    assert report.ok and report.problems == ()
    manifest = read_manifest(tree_index.folder)
    assert report.files_checked == 1 + sum(len(shard.files) for shard in manifest.shards)
    assert report.sample == 300 and not report.exact_only
    assert report.recall_at_10 >= 0.99
    assert report.model_checksum == "c0ffee" and report.model_ok is None
    assert not dataclasses.replace(report, model_ok=False).ok  # the caller's model check
    assert report.to_json()["ok"] is True
    assert type(report).from_json(report.to_json()) == report


def test_flipped_byte_in_any_shard_file_fails_naming_it(index_copy):
    shard = read_manifest(index_copy).shards[2]
    for name in shard.files:
        path = index_copy / shard.name / name
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
        report = verify(index_copy, sample=50)
        assert not report.ok, name
        assert report.problems == (f"{path}: checksum mismatch (the file was changed or damaged)",)
        assert report.recall_at_10 is None  # a damaged index is not searched
        path.write_bytes(original)
    assert verify(index_copy, sample=0).ok


def test_missing_and_extra_files_are_reported(index_copy):
    (index_copy / "shard-00001" / "labels.json").unlink()
    (index_copy / "shard-00003" / "notes.txt").write_text("hi")
    problems = verify(index_copy, sample=0).problems
    assert any("shard-00001/labels.json: file missing" in p for p in problems)
    assert any("shard-00003/notes.txt: file not listed" in p for p in problems)


@pytest.mark.scann
def test_pickles_are_refused(index_copy):
    pickle = index_copy / "shard-00000" / "scann" / "scann_docids.pkl"
    pickle.write_bytes(b"\x80\x04N.")  # pickle of None; never loaded
    with pytest.raises(ArtifactError, match="scann_docids.pkl"):
        Index(index_copy)
    with pytest.raises(ArtifactError, match="scann_docids.pkl"):
        Index(index_copy, exact=True)
    report = verify(index_copy, sample=10)
    assert not report.ok and "scann_docids.pkl" in report.problems[0]


@pytest.mark.scann
def test_truncated_file_is_refused_on_open(index_copy):
    path = index_copy / "shard-00001" / "scann" / "dataset.npy"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 4)
    with pytest.raises(ArtifactError, match=r"shard-00001/scann/dataset.npy: .* bytes"):
        Index(index_copy)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, r"not a mel index \(no manifest.json in it\)"),
        (b"{not json", "manifest.json: not valid JSON"),
        (b'{"format": "mel.index.v0"}', "unsupported index format 'mel.index.v0'"),
        (b'{"format": "mel.index.v1", "dim": 3}', "manifest.json: malformed manifest"),
    ],
)
def test_missing_or_corrupt_manifest(index_copy, payload, message):
    manifest = index_copy / "manifest.json"
    if payload is None:
        manifest.unlink()
    else:
        manifest.write_bytes(payload)
    for action in (Index, verify, info):
        with pytest.raises(ArtifactError, match=message):
            action(index_copy)


def test_missing_folder():
    with pytest.raises(ArtifactError, match="index folder not found"):
        Index("/nonexistent/index")


@pytest.mark.scann
def test_info(tree_index):
    data = info(tree_index.folder)
    assert (data.format, data.dim, data.entries, data.qids) == ("mel.index.v1", 32, 10_000, 10_000)
    assert data.kinds == {"description": 10_000}
    assert data.languages == {"en": tree_index.langs.count("en"), "es": tree_index.langs.count("es")}
    assert data.model == {"checksum": "c0ffee", "name": "test"} and data.query_encoding == "context"
    assert [s.algorithm for s in data.shards] == ["tree_ah"] * 4
    assert data.settings["shard_size"] == 2500
    assert data.size_bytes == folder_size(tree_index.folder)
    assert "scann" in data.tool_versions
    assert orjson.loads(orjson.dumps(data.to_json()))["shards"][0]["name"] == "shard-00000"
