"""Building an index folder: layout, manifest content, entry tables, bad input."""

import math

import numpy as np
import orjson
import pytest

from mel.artifacts import command_line, sha256_file
from mel.errors import ArtifactError, InputError
from mel.indexes import FORMAT, KINDS, Index, IndexSettings, IndexWriter, partial_folder, read_manifest
from mel.indexes.builder import BuildProgress
from tests.indexes.index_helpers import DIM, SHARD_SIZE, TREE_SETTINGS, entry_data, write_index


@pytest.mark.scann
def test_manifest_content(tree_index):
    manifest = read_manifest(tree_index.folder)
    data = orjson.loads((tree_index.folder / "manifest.json").read_bytes())
    n = len(tree_index.qids)

    assert data["format"] == FORMAT == "mel.index.v1"
    assert data["dim"] == DIM
    assert data["metric"] == "dot_product"
    assert data["kinds"] == list(KINDS) == ["description", "context", "label"]
    assert sorted(data["languages"]) == ["en", "es"]
    counts = data["counts"]
    assert counts["entries"] == n and counts["qids"] == n
    assert counts["by_kind"] == {"description": n}
    assert counts["by_language"] == {"en": tree_index.langs.count("en"), "es": tree_index.langs.count("es")}
    assert counts["by_kind_language"] == {"description": counts["by_language"]}
    # Caller fields pass through at the top level.
    assert data["model"] == {"checksum": "c0ffee", "name": "test"}
    assert data["query_encoding"] == "context"
    assert manifest.model == data["model"]
    # Provenance.
    assert data["command"] == command_line()
    assert {"mel", "python", "numpy", "scann"} <= set(data["tool_versions"])
    assert data["settings"] == TREE_SETTINGS.to_json()
    assert data["created"].endswith("Z")

    assert len(data["shards"]) == math.ceil(n / SHARD_SIZE) == 4
    first = 0
    for shard in data["shards"]:
        assert shard["first_entry"] == first and shard["entries"] == SHARD_SIZE
        first += shard["entries"]
        search = shard["search"]
        assert search["algorithm"] == "tree_ah"
        assert search["num_leaves"] == round(math.sqrt(SHARD_SIZE))
        assert search["leaves_to_search"] == TREE_SETTINGS.leaves_to_search
        assert search["reorder_num_neighbors"] == TREE_SETTINGS.reorder_num_neighbors
        assert search["dims_per_block"] == 2
        folder = tree_index.folder / shard["name"]
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert set(shard["files"]) == on_disk  # every file is listed, nothing extra
        assert {"qids.npy", "kinds.npy", "langs.npy", "labels.json", "scann/scann_assets.pbtxt"} <= on_disk
        for name, record in shard["files"].items():
            assert record["sha256"] == sha256_file(folder / name)
            assert record["bytes"] == (folder / name).stat().st_size
        # ScaNN's own float32 copy is the vector store; it is not written twice.
        assert shard["vectors"] == "scann/dataset.npy" and "vectors.npy" not in on_disk
    assert data["files"]["qids.npy"]["sha256"] == sha256_file(tree_index.folder / "qids.npy")


def test_no_pickles_and_no_leftovers(tree_index):
    names = [p.name for p in tree_index.folder.rglob("*")]
    assert not [n for n in names if n.endswith((".pkl", ".pickle"))]
    assert not [n for n in names if n.endswith((".jsonl", ".tmp", ".log")) or n == "build.json"]
    assert not partial_folder(tree_index.folder).exists()


def test_entry_tables_are_plain_numpy_and_json(tree_index):
    manifest = read_manifest(tree_index.folder)
    shard = manifest.shards[1]
    folder = tree_index.folder / shard.name
    rows = slice(shard.first_entry, shard.first_entry + shard.entries)
    qids = np.load(folder / "qids.npy", allow_pickle=False)
    assert qids.dtype == np.int64
    np.testing.assert_array_equal(qids, tree_index.qids[rows])
    langs = np.load(folder / "langs.npy", allow_pickle=False)
    assert [manifest.languages[code] for code in langs] == tree_index.langs[rows]
    kinds = np.load(folder / "kinds.npy", allow_pickle=False)
    assert kinds.dtype == np.uint8 and set(kinds) == {KINDS.index("description")}
    assert orjson.loads((folder / "labels.json").read_bytes()) == tree_index.labels[rows]
    vectors = np.load(folder / shard.vectors, allow_pickle=False)
    np.testing.assert_allclose(vectors, tree_index.vectors[rows], atol=1e-6)  # renormalised in float32
    qid_set = np.load(tree_index.folder / "qids.npy", allow_pickle=False)
    np.testing.assert_array_equal(qid_set, np.unique(tree_index.qids))


def test_entry_lookup(tree_index):
    index = Index(tree_index.folder, exact=True)
    entry = index.entry(2600)
    assert (entry.entry_id, entry.qid, entry.kind) == (2600, f"Q{tree_index.qids[2600]}", "description")
    assert (entry.lang, entry.label) == (tree_index.langs[2600], tree_index.labels[2600])
    np.testing.assert_array_equal(index.entry_qids(np.array([0, 9999, 2500])), tree_index.qids[[0, 9999, 2500]])
    np.testing.assert_allclose(index.vectors(np.array([7, 5000])), tree_index.vectors[[7, 5000]], atol=1e-6)
    with pytest.raises(IndexError):
        index.entry(len(index))


@pytest.mark.scann
def test_vectors_are_normalised_and_qids_parsed(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((30, 8)).astype(np.float32) * 5
    with IndexWriter(tmp_path / "idx", 8, settings=IndexSettings(shard_size=20)) as writer:
        writer.add(raw, [f"Q{i}" for i in range(100, 130)], "label", "de", [None] * 30)
    index = Index(tmp_path / "idx")
    stored = index.vectors(np.arange(30))
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(stored, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert index.entry(0).qid == "Q100" and index.entry(0).label == ""
    assert [s.search.algorithm for s in index.manifest.shards] == ["brute_force", "brute_force"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(vectors=np.ones((3, 5), np.float32)), r"shape \(3, 5\), expected \(n, 8\)"),
        (dict(qids=["Q1", "P2", "Q3"]), "'P2'"),
        (dict(qids=[1, 0, 3]), "not a Wikidata item number: 0"),
        (dict(kinds="alias"), "unknown entry kind 'alias'"),
        (dict(vectors=np.vstack([np.ones((2, 8)), np.zeros((1, 8))]).astype(np.float32)), "entry 2: vector is zero"),
        (dict(vectors=np.full((3, 8), np.nan, np.float32)), "entry 0"),
        (dict(labels=["a", "b"]), "2 labels for 3 vectors"),
        (dict(langs=["en", "es"]), "2 languages for 3 vectors"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, change, message):
    batch = dict(vectors=np.ones((3, 8), np.float32), qids=["Q1", "Q2", "Q3"], kinds="description", langs="en",
                 labels=["a", "b", "c"])
    batch.update(change)
    writer = IndexWriter(tmp_path / "idx", 8)
    with pytest.raises(InputError, match=message):
        writer.add(**batch)
    writer.abort()


def test_existing_folder_needs_force(tmp_path):
    vectors, qids, langs, labels = entry_data(50)
    settings = IndexSettings(shard_size=20)
    write_index(tmp_path / "idx", vectors, qids, langs, labels, settings=settings)
    with pytest.raises(ArtifactError, match="already exists"):
        IndexWriter(tmp_path / "idx", DIM)
    write_index(tmp_path / "idx", vectors[:30], qids[:30], langs[:30], labels[:30], settings=settings, force=True)
    assert len(Index(tmp_path / "idx")) == 30
    assert not list(tmp_path.glob(".idx*"))


def test_failed_build_leaves_no_index(tmp_path):
    vectors, qids, langs, labels = entry_data(100)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with IndexWriter(tmp_path / "idx", DIM, settings=IndexSettings(shard_size=30)) as writer:
            writer.add(vectors[:70], qids[:70], "description", langs[:70], labels[:70])
            raise RuntimeError("encoder crashed")
    assert not (tmp_path / "idx").exists()
    with pytest.raises(ArtifactError, match="not found"):
        Index(tmp_path / "idx")
    partial = partial_folder(tmp_path / "idx")
    assert partial.is_dir() and not (partial / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="manifest.json"):
        Index(partial)


def test_empty_build_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no entries"):
        with IndexWriter(tmp_path / "idx", DIM):
            pass
    assert not (tmp_path / "idx").exists()


def test_extra_fields_may_not_shadow_the_manifest(tmp_path):
    with pytest.raises(ValueError, match="dim"):
        IndexWriter(tmp_path / "idx", DIM, extra={"dim": 3})


class RecordedProgress(BuildProgress):
    def __init__(self):
        self.events = []

    def start(self, done, total):
        self.events.append(("start", done, total))

    def advance(self, entries):
        self.events.append(("advance", entries))

    def status(self, text):
        self.events.append(("status", text))

    def stop(self):
        self.events.append(("stop",))


def test_the_build_reports_through_its_callbacks_and_prints_nothing(tmp_path, capfd):
    vectors, qids, langs, labels = entry_data(40)
    progress = RecordedProgress()
    with IndexWriter(tmp_path / "idx", DIM, settings=IndexSettings(shard_size=25), total=40,
                     progress=progress) as writer:
        writer.add(vectors, qids, "description", langs, labels)
    events = progress.events
    assert events[0] == ("start", 0, 40) and events[-1] == ("stop",)
    assert sum(e[1] for e in events if e[0] == "advance") == 40
    assert ("status", "shard-00000: checksums") in events and ("status", "shard-00001: checksums") in events
    assert capfd.readouterr() == ("", "")


@pytest.mark.scann
def test_scann_native_logging_stays_off_the_terminal(tmp_path, capfd):
    vectors, qids, langs, labels = entry_data(1200)
    settings = IndexSettings(shard_size=1200, brute_force_below=300, partition_above=600)
    write_index(tmp_path / "idx", vectors, qids, langs, labels, settings=settings)
    assert read_manifest(tmp_path / "idx").shards[0].search.algorithm == "tree_ah"
    assert capfd.readouterr() == ("", "")  # ScaNN's C++ INFO lines went to a discarded log
    assert not list(tmp_path.rglob("*.log"))
