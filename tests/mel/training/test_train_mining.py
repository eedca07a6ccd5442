"""Hard-negative mining through the index search API."""

from __future__ import annotations

import numpy as np
import pytest

from mel.errors import InputError
from mel.indexes import Index, IndexSettings, IndexWriter
from mel.training.mining import MiningStats, NegativeMiner

DIM = 16


def build_index(folder, vectors, qids, scann=True):
    settings = IndexSettings(scann=scann)
    with IndexWriter(folder, DIM, settings=settings) as writer:
        writer.add(vectors, qids, "description", "en", [f"e{q}" for q in qids])
    return Index(folder)


def unit_rows(rng, n):
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def entities():
    rng = np.random.default_rng(0)
    return unit_rows(rng, 40), np.arange(1, 41, dtype=np.int64)


@pytest.fixture(scope="module", params=[True, False], ids=["scann", "exact"])
def index(request, entities, tmp_path_factory):
    vectors, qids = entities
    return build_index(tmp_path_factory.mktemp("mining") / "index", vectors, qids, scann=request.param)


def queries_near(entities, gold_rows, noise=0.1, seed=1):
    vectors, qids = entities
    rng = np.random.default_rng(seed)
    queries = vectors[gold_rows] + noise * rng.standard_normal((len(gold_rows), DIM)).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True), qids[gold_rows]


def test_never_the_gold_qid_and_always_distinct(index, entities):
    queries, gold = queries_near(entities, np.arange(40).repeat(5))
    stats = MiningStats()
    negatives = NegativeMiner(index, negatives=7, k=10).sample(queries, gold, np.random.default_rng(0), stats)
    assert negatives.shape == (200, 7)
    assert not (negatives == gold[:, None]).any()
    assert all(len(set(row)) == 7 for row in negatives.tolist())
    assert set(negatives.ravel()) <= set(entities[1].tolist())
    assert stats.mentions == 200 and stats.gold_in_top_k == 200  # queries sit next to their gold entity


def test_negatives_are_the_hard_ones(index, entities):
    vectors, qids = entities
    queries, gold = queries_near(entities, np.arange(40))
    negatives = NegativeMiner(index, negatives=3, k=6).sample(queries, gold, np.random.default_rng(0))
    scores = queries @ vectors.T
    for row in range(len(gold)):
        ranked = qids[np.argsort(-scores[row])]
        top = [q for q in ranked if q != gold[row]][:6]
        assert set(negatives[row]) <= set(top)  # sampled among the k nearest (gold dropped)


def test_k_doubles_while_fewer_than_neg_remain(index, entities):
    queries, gold = queries_near(entities, np.arange(10))
    stats = MiningStats()
    miner = NegativeMiner(index, negatives=3, k=2)  # top 2 minus the gold leaves 1 < 3
    candidates = miner.candidates(queries, gold, stats)
    assert stats.grown == 10 and stats.max_k == 4 and stats.searches == 2
    assert all(len(c) >= 3 and gold[i] not in c for i, c in enumerate(candidates))
    negatives = miner.sample(queries, gold, np.random.default_rng(0))
    assert not (negatives == gold[:, None]).any()


def test_repeated_qids_collapse_to_one_candidate(tmp_path):
    # Each QID has three entries (e.g. descriptions in three languages): top-k holds distinct QIDs.
    rng = np.random.default_rng(3)
    centres = unit_rows(rng, 12)
    vectors = np.repeat(centres, 3, axis=0) + 0.01 * rng.standard_normal((36, DIM)).astype(np.float32)
    qids = np.repeat(np.arange(1, 13, dtype=np.int64), 3)
    index = build_index(tmp_path / "index", vectors, qids)
    queries = centres[:4]
    negatives = NegativeMiner(index, negatives=5, k=6).sample(queries, np.arange(1, 5), np.random.default_rng(0))
    assert all(len(set(row)) == 5 for row in negatives.tolist())


def test_sampling_is_uniform_without_replacement(index, entities):
    queries, gold = queries_near(entities, np.full(3000, 7))
    miner = NegativeMiner(index, negatives=3, k=10)
    negatives = miner.sample(queries[:1].repeat(3000, axis=0), gold, np.random.default_rng(5))
    candidates = miner.candidates(queries[:1], gold[:1])[0][:9]
    values, counts = np.unique(negatives, return_counts=True)
    assert set(values) == set(candidates.tolist())  # 9 non-gold candidates of the top 10
    expected = 3000 * 3 / 9
    assert np.all(np.abs(counts - expected) < 0.1 * expected)


def test_same_seed_same_negatives(index, entities):
    queries, gold = queries_near(entities, np.arange(40))
    miner = NegativeMiner(index, negatives=4, k=12)
    first = miner.sample(queries, gold, np.random.default_rng(9))
    assert np.array_equal(first, miner.sample(queries, gold, np.random.default_rng(9)))
    assert not np.array_equal(first, miner.sample(queries, gold, np.random.default_rng(10)))


def test_a_kb_smaller_than_neg_plus_one_is_refused(index):
    with pytest.raises(InputError, match="needs at least 41"):
        NegativeMiner(index, negatives=40)
