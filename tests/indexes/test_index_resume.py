"""Interrupted builds: resume reuses checked shards and spilled rows, or starts clean."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mel.errors import ArtifactError
from mel.indexes import Index, IndexSettings, IndexWriter, partial_folder, read_manifest, verify
from tests.indexes.index_helpers import DIM, entry_data, queries_like, write_index

SETTINGS = IndexSettings(shard_size=400, brute_force_below=100, partition_above=300, training_sample_size=400)
N = 1500  # 3 full shards and a part


@pytest.fixture(scope="module")
def data():
    return entry_data(N, seed=3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("reference") / "index"
    write_index(folder, *data, settings=SETTINGS, batch=130)
    return folder


def feed(writer: IndexWriter, data, stop: int, batch: int = 130) -> None:
    vectors, qids, langs, labels = data
    for start in range(writer.entries_done, stop, batch):
        end = min(start + batch, stop)
        writer.add(vectors[start:end], qids[start:end], "description", langs[start:end], labels[start:end])


def assert_same_index(folder: Path, reference: Path) -> None:
    built, expected = read_manifest(folder), read_manifest(reference)
    assert built.counts == expected.counts
    assert [s.entries for s in built.shards] == [s.entries for s in expected.shards]
    for shard in expected.shards:  # same entries, row for row
        for table in ("qids.npy", "kinds.npy", "langs.npy", "labels.json"):
            assert (folder / shard.name / table).read_bytes() == (reference / shard.name / table).read_bytes()
    queries = queries_like(50, seed=3)
    np.testing.assert_array_equal(
        Index(folder, exact=True).search(queries, 10).qids, Index(reference, exact=True).search(queries, 10).qids
    )
    assert verify(folder, sample=100).ok


def interrupted_build(folder: Path, data, stop: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        with IndexWriter(folder, DIM, settings=SETTINGS) as writer:
            feed(writer, data, stop)
            raise KeyboardInterrupt
    assert not folder.exists()


def test_resume_after_interruption(tmp_path, data, reference):
    folder = tmp_path / "index"
    interrupted_build(folder, data, 1000)  # shards 0 and 1 done, 200 rows of shard 2 spilled
    partial = partial_folder(folder)
    stamps = {p: p.stat().st_mtime_ns for p in (partial / "shard-00000").rglob("*")}

    writer = IndexWriter(folder, DIM, settings=SETTINGS, resume=True)
    assert (writer.reused_shards, writer.reused_rows, writer.entries_done) == (2, 200, 1000)
    feed(writer, data, N)
    writer.close()

    assert not partial.exists()
    assert {p: p.stat().st_mtime_ns for p in (folder / "shard-00000").rglob("*")} == {
        folder / p.relative_to(partial): t for p, t in stamps.items()
    }  # shard 0 was reused, not rewritten
    assert_same_index(folder, reference)


def test_resume_rebuilds_a_damaged_shard_and_those_after_it(tmp_path, data, reference):
    folder = tmp_path / "index"
    interrupted_build(folder, data, 1300)
    damaged = partial_folder(folder) / "shard-00001" / "qids.npy"
    payload = bytearray(damaged.read_bytes())
    payload[-3] ^= 0x40
    damaged.write_bytes(bytes(payload))

    writer = IndexWriter(folder, DIM, settings=SETTINGS, resume=True)
    assert (writer.reused_shards, writer.entries_done) == (1, 400)
    assert not (partial_folder(folder) / "shard-00002").exists()
    feed(writer, data, N)
    writer.close()
    assert_same_index(folder, reference)


def test_resume_after_a_hard_kill(tmp_path, data, reference):
    """A process killed without any cleanup keeps every checkpointed row."""
    folder = tmp_path / "index"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[2])]!r}
        from index_helpers import DIM, entry_data
        from mel.indexes import IndexSettings, IndexWriter
        import test_index_resume as t
        writer = IndexWriter({str(folder)!r}, DIM, settings=t.SETTINGS, checkpoint_seconds=0)
        t.feed(writer, entry_data({N}, seed=3), 1170)
        os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert not folder.exists()

    writer = IndexWriter(folder, DIM, settings=SETTINGS, resume=True)
    assert (writer.reused_shards, writer.entries_done) == (2, 1170)
    feed(writer, data, N)
    writer.close()
    assert_same_index(folder, reference)


def test_resume_refuses_a_different_build(tmp_path, data):
    folder = tmp_path / "index"
    interrupted_build(folder, data, 500)
    with pytest.raises(ArtifactError, match="different extra"):
        IndexWriter(folder, DIM, settings=SETTINGS, resume=True, extra={"model": {"checksum": "other"}})
    with pytest.raises(ArtifactError, match="different settings"):
        IndexWriter(folder, DIM, settings=IndexSettings(shard_size=401), resume=True)


def test_without_resume_an_unfinished_build_is_discarded(tmp_path, data, reference):
    folder = tmp_path / "index"
    interrupted_build(folder, data, 900)
    writer = IndexWriter(folder, DIM, settings=SETTINGS)
    assert writer.entries_done == 0 and writer.reused_shards == 0
    assert any("unfinished build" in note for note in writer.notes)
    feed(writer, data, N)
    writer.close()
    assert_same_index(folder, reference)


def test_resume_with_nothing_to_resume_starts_fresh(tmp_path, data, reference):
    folder = tmp_path / "index"
    writer = IndexWriter(folder, DIM, settings=SETTINGS, resume=True)
    assert writer.entries_done == 0
    feed(writer, data, N)
    writer.close()
    assert_same_index(folder, reference)
    assert os.listdir(tmp_path) == ["index"]
