"""Search: ScaNN vs exact, distinct QIDs, collapsing entries, doubling k, exact mode."""

import numpy as np
import pytest

import mel.indexes.searcher
from mel.errors import ArtifactError
from mel.indexes import Index, IndexSettings, SearchResult
from tests.indexes.index_helpers import (
    DIM,
    TREE_SETTINGS,
    assert_same_top_k,
    clustered,
    entry_data,
    exact_top_k,
    queries_like,
    write_index,
)


@pytest.fixture(scope="module")
def queries():
    return queries_like(400)


@pytest.mark.scann
def test_scann_top10_matches_exact_top10(tree_index, queries):
    index = Index(tree_index.folder)
    assert not index.exact
    approximate = index.search(queries, 10)
    exact = Index(tree_index.folder, exact=True).search(queries, 10)
    same = np.mean([set(a) == set(e) for a, e in zip(approximate.qids, exact.qids)])
    assert same >= 0.99, same
    # The exact mode itself matches a dense NumPy oracle.
    assert_same_top_k(exact.qids, exact.scores, tree_index.vectors, tree_index.qids, queries)


def test_result_arrays(tree_index, queries):
    result = Index(tree_index.folder).search(queries[:7], 5)
    assert isinstance(result, SearchResult) and len(result) == 7
    assert result.qids.shape == result.scores.shape == result.entry_ids.shape == (7, 5)
    assert (result.qids.dtype, result.scores.dtype, result.entry_ids.dtype) == (np.int64, np.float32, np.int64)
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()  # best first
    # Each entry id is an entry of the QID next to it, and the score is its cosine.
    np.testing.assert_array_equal(tree_index.qids[result.entry_ids], result.qids)
    cosines = np.einsum("qd,qkd->qk", queries[:7], tree_index.vectors[result.entry_ids])
    np.testing.assert_allclose(result.scores, cosines, atol=1e-4)


def test_batches_and_unnormalised_queries_give_the_same_answer(tree_index, queries):
    index = Index(tree_index.folder, exact=True)
    whole = index.search(queries[:50], 10)
    batched = index.search(3.5 * queries[:50], 10, batch_size=7)
    np.testing.assert_array_equal(whole.qids, batched.qids)
    np.testing.assert_allclose(whole.scores, batched.scores, atol=1e-6)


def test_exact_search_in_small_chunks(tree_index, queries, monkeypatch):
    reference = Index(tree_index.folder, exact=True).search(queries[:20], 10)
    monkeypatch.setattr(mel.indexes.searcher, "_EXACT_CHUNK_FLOATS", 20 * 64)  # 64 rows per chunk
    chunked = Index(tree_index.folder, exact=True).search(queries[:20], 10)
    np.testing.assert_array_equal(chunked.qids, reference.qids)


@pytest.fixture(scope="module")
def multi_kind_index(tmp_path_factory):
    """300 QIDs with a description, a label and two contexts each, in 4 shards."""
    rng = np.random.default_rng(5)
    n_qids = 300
    base = clustered(rng, n_qids)
    entries, qids, kinds = [], [], []
    for kind, noise in (("description", 0.3), ("label", 0.5), ("context", 0.6), ("context", 0.6)):
        moved = base + noise / np.sqrt(DIM) * rng.standard_normal(base.shape)
        entries.append(moved / np.linalg.norm(moved, axis=1, keepdims=True))
        qids.append(np.arange(1000, 1000 + n_qids))
        kinds += [kind] * n_qids
    order = rng.permutation(4 * n_qids)  # a QID's entries land in different shards
    vectors = np.vstack(entries).astype(np.float32)[order]
    qids = np.concatenate(qids)[order]
    kinds = [kinds[i] for i in order]
    langs = ["pl"] * len(qids)
    labels = [f"Q{q} {k}" for q, k in zip(qids, kinds)]
    folder = tmp_path_factory.mktemp("multi") / "index"
    write_index(folder, vectors, qids, langs, labels, kinds=kinds, settings=IndexSettings(shard_size=300))
    return folder, vectors, qids, kinds, base


@pytest.mark.scann
@pytest.mark.parametrize("exact", [False, True])
def test_entries_of_one_qid_collapse_to_the_best(multi_kind_index, exact):
    folder, vectors, qids, kinds, base = multi_kind_index
    index = Index(folder, exact=exact)
    assert index.num_qids == 300 and len(index) == 1200
    assert index.counts.by_kind == {"description": 300, "label": 300, "context": 600}
    queries = base[:40]
    result = index.search(queries, 10)
    for row in result.qids:
        assert len(set(row)) == 10  # distinct QIDs
    assert_same_top_k(result.qids, result.scores, vectors, qids, queries)
    # The entry id is the QID's best-scoring entry, whatever its kind.
    for query, row_qids, row_entries in zip(queries, result.qids, result.entry_ids):
        for qid, entry_id in zip(row_qids, row_entries):
            candidates = np.flatnonzero(qids == qid)
            assert entry_id == candidates[np.argmax(vectors[candidates] @ query)]
    kinds_found = {index.entry(int(e)).kind for e in result.entry_ids.ravel()}
    assert len(kinds_found) >= 2


@pytest.fixture(scope="module")
def crowded_index(tmp_path_factory):
    """40 QIDs with 60 near-identical entries each: the first k entries hold one QID."""
    rng = np.random.default_rng(9)
    centers = clustered(rng, 40)
    vectors = np.repeat(centers, 60, axis=0) + 0.02 / np.sqrt(DIM) * rng.standard_normal((2400, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    qids = np.repeat(np.arange(1, 41), 60)
    order = rng.permutation(len(qids))
    vectors, qids = vectors[order], qids[order]
    folder = tmp_path_factory.mktemp("crowded") / "index"
    settings = IndexSettings(shard_size=800, brute_force_below=300, partition_above=600, leaves_to_search=20,
                             training_sample_size=800)
    write_index(folder, vectors, qids, ["en"] * 2400, [""] * 2400, settings=settings)
    return folder, vectors, qids, centers


@pytest.mark.scann
@pytest.mark.parametrize("exact", [False, True])
def test_doubling_finds_k_distinct_qids(crowded_index, exact):
    folder, vectors, qids, centers = crowded_index
    # The 10 entries nearest to each query all belong to one QID.
    nearest = np.argsort(-(centers @ vectors.T), axis=1)[:, :10]
    assert all(len(set(qids[row])) == 1 for row in nearest)
    index = Index(folder, exact=exact)
    assert {s.search.algorithm for s in index.manifest.shards} == {"tree_ah"}
    # Each shard is asked for 10 entries at first, so only doubling finds 10 QIDs.
    result = index.search(centers, 10, final_num_neighbors=10)
    assert all(len(set(row)) == 10 and (row > 0).all() for row in result.qids)
    np.testing.assert_array_equal(qids[result.entry_ids], result.qids)
    cosines = np.einsum("qd,qkd->qk", centers, vectors[result.entry_ids])
    np.testing.assert_allclose(result.scores, cosines, atol=1e-4)
    oracle_qids, _ = exact_top_k(vectors, qids, centers, 10)
    if exact:
        assert_same_top_k(result.qids, result.scores, vectors, qids, centers)
    else:
        # These neighbours are distant clusters, which a partial tree search
        # can miss; most are found.
        recall = np.mean([len(set(row) & set(oracle)) / 10 for row, oracle in zip(result.qids, oracle_qids)])
        assert recall >= 0.9, recall


@pytest.mark.scann
def test_k_beyond_the_index_pads(crowded_index):
    folder, vectors, qids, centers = crowded_index
    for exact in (False, True):
        result = Index(folder, exact=exact).search(centers[:2], 50)
        assert (result.qids[:, :40] > 0).all() and sorted(result.qids[0, :40]) == list(range(1, 41))
        assert (result.qids[:, 40:] == -1).all() and (result.entry_ids[:, 40:] == -1).all()
        assert np.isneginf(result.scores[:, 40:]).all()


def test_contains(tree_index):
    index = Index(tree_index.folder)
    found = index.contains(["Q1", "Q10000", "Q10001", 5000, 99999])
    np.testing.assert_array_equal(found, [True, True, False, True, False])
    assert index.contains(np.array([], dtype=np.int64)).shape == (0,)


def test_exact_only_index(tmp_path):
    vectors, qids, langs, labels = entry_data(600)
    write_index(tmp_path / "idx", vectors, qids, langs, labels, settings=IndexSettings(shard_size=250, scann=False))
    assert not list((tmp_path / "idx").rglob("scann"))
    index = Index(tmp_path / "idx")
    assert index.exact
    result = index.search(vectors[:5], 3)
    np.testing.assert_array_equal(result.qids[:, 0], qids[:5])
    with pytest.raises(ArtifactError, match="no ScaNN searchers"):
        Index(tmp_path / "idx", exact=False)


@pytest.mark.scann
def test_search_settings_can_be_overridden(tree_index, queries):
    index = Index(tree_index.folder, leaves_to_search=1, pre_reorder_num_neighbors=20)
    narrow = index.search(queries[:200], 10)
    wide = index.search(queries[:200], 10, leaves_to_search=TREE_SETTINGS.leaves_to_search * 3)
    exact = Index(tree_index.folder, exact=True).search(queries[:200], 10)

    def agreement(result):
        return np.mean([len(set(a) & set(e)) / 10 for a, e in zip(result.qids, exact.qids)])

    assert agreement(wide) > agreement(narrow)


def test_bad_queries(tree_index):
    index = Index(tree_index.folder)
    with pytest.raises(ValueError, match="expected"):
        index.search(np.ones((2, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="k must"):
        index.search(np.ones((2, DIM), np.float32), 0)
    empty = index.search(np.empty((0, DIM), np.float32), 4)
    assert empty.qids.shape == (0, 4)
