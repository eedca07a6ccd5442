"""Helpers for the index tests: clustered unit vectors, small indexes, an exact oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.indexes import IndexSettings, IndexWriter

DIM = 32
SHARD_SIZE = 2500

# Small shards trained as tree + AH + reordering (the rules of thumb would pick
# brute force at this size). Partitions of so few points are coarse, so most of
# the ~50 leaves are searched to match exact search on 99% of queries.
TREE_SETTINGS = IndexSettings(
    shard_size=SHARD_SIZE,
    brute_force_below=500,
    partition_above=1000,
    leaves_to_search=40,
    training_sample_size=SHARD_SIZE,
)


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 200, spread: float = 0.5, centers=None):
    """Unit vectors around random unit centres (cosine to the centre ≈ 0.9 at spread 0.5)."""
    if centers is None:
        centers = cluster_centers(rng, clusters, dim)
    points = centers[rng.integers(0, len(centers), n)] + spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def cluster_centers(rng: np.random.Generator, clusters: int = 200, dim: int = DIM) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim))
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


@dataclass
class BuiltIndex:
    folder: Path
    vectors: np.ndarray
    qids: np.ndarray
    langs: list[str]
    labels: list[str]


def write_index(folder: Path, vectors, qids, langs, labels, kinds="description", settings=TREE_SETTINGS, batch=700,
                **options):
    with IndexWriter(folder, vectors.shape[1], settings=settings, **options) as writer:
        for start in range(0, len(vectors), batch):
            stop = start + batch
            writer.add(
                vectors[start:stop],
                qids[start:stop],
                kinds if isinstance(kinds, str) else kinds[start:stop],
                langs[start:stop],
                labels[start:stop],
            )
    return writer.manifest


def entry_data(n: int, seed: int = 0):
    """n entries, one QID each, around 200 clusters; languages and labels vary."""
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n, centers=cluster_centers(np.random.default_rng(seed)))
    qids = np.arange(1, n + 1, dtype=np.int64)
    langs = ["es" if i % 3 else "en" for i in range(n)]
    labels = [f"entity {i} «{i % 7}»" for i in range(n)]
    return vectors, qids, langs, labels


def queries_like(n: int, seed: int = 0) -> np.ndarray:
    """Fresh points around the clusters of entry_data(…, seed)."""
    return clustered(np.random.default_rng(10_000 + seed), n, centers=cluster_centers(np.random.default_rng(seed)))


def exact_top_k(vectors: np.ndarray, qids: np.ndarray, queries: np.ndarray, k: int):
    """Oracle: per query, QIDs ranked by their best entry's score (dense NumPy, no index)."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(qids, kind="stable")
    unique, starts = np.unique(qids[order], return_index=True)
    best = np.maximum.reduceat(scores[:, order], starts, axis=1)
    top = np.argsort(-best, axis=1, kind="stable")[:, :k]
    return unique[top], np.take_along_axis(best, top, axis=1)


def assert_same_top_k(qids: np.ndarray, scores: np.ndarray, vectors, entry_qids, queries, atol: float = 1e-5) -> None:
    """Equal to the oracle, except that (near-)tied QIDs may trade places."""
    k = qids.shape[1]
    oracle_qids, oracle_scores = exact_top_k(vectors, entry_qids, queries, k + 5)
    np.testing.assert_allclose(scores, oracle_scores[:, :k], atol=atol)
    for row in range(len(qids)):
        for position in np.flatnonzero(qids[row] != oracle_qids[row, :k]):
            tied = np.abs(oracle_scores[row] - oracle_scores[row, position]) <= atol
            assert qids[row, position] in oracle_qids[row, tied], (row, position)

