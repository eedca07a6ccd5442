"""Searching an index: top-k distinct QIDs per query, merged across shards.

Every shard is asked for its best entries; entries of one QID collapse to the
best-scoring one. A shard is asked again, with twice as many entries, for the
queries whose answer holds fewer than k distinct QIDs, until it gives k or has
no more (for a tree, the leaves searched are doubled too when they run dry).
Because each shard then contributes its own top k distinct QIDs, the merged
top k is the top k of the whole index, as far as each shard's search is exact.

ScaNN serves the search when it is installed and the shards were built with
it; `exact=True` (or a missing ScaNN) scores every vector with NumPy instead,
in chunks so memory stays bounded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.errors import ArtifactError
from mel.indexes.integrity import check_file, check_size, check_vectors_file
from mel.indexes.manifest import QID_SET_FILE, FileRecord, IndexManifest, ShardRecord, read_manifest
from mel.indexes.scann_backend import load_scann_searcher, refuse_pickles, scann_available
from mel.indexes.store import VECTOR_DTYPE, Entry, ShardTables, load_npy
from mel.qids import QID_DTYPE, parse_qids, qid_to_str

_SCORE_PAD = -np.inf
_EXACT_CHUNK_FLOATS = 1 << 24  # 64 MiB of float32 scores per matrix product


@dataclass(frozen=True)
class SearchResult:
    """Row i holds query i's top-k distinct QIDs, best first, padded with -1 / -inf."""

    qids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32, cosine similarity
    entry_ids: np.ndarray  # (n, k) int64: the best entry of each QID

    def __len__(self) -> int:
        return len(self.qids)


class _ExactShard:
    """Brute-force dot products over the memory-mapped vectors."""

    def __init__(self, tables: ShardTables):
        self.tables = tables
        self.size = tables.entries

    def search(self, queries: np.ndarray, m: int, leaves: int | None = None, pre_reorder: int | None = None):
        vectors = self.tables.vectors
        n, m = len(queries), min(m, self.size)
        best_rows = np.full((n, 0), -1, dtype=np.int64)
        best_scores = np.full((n, 0), _SCORE_PAD, dtype=np.float32)
        chunk = max(m, _EXACT_CHUNK_FLOATS // max(1, n))
        for start in range(0, self.size, chunk):
            block = np.asarray(vectors[start : start + chunk])
            scores = queries @ block.T
            if scores.shape[1] > m:
                top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
                scores = np.take_along_axis(scores, top, axis=1)
            else:
                top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            rows = np.concatenate([best_rows, top + start], axis=1)
            scores = np.concatenate([best_scores, scores], axis=1)
            if rows.shape[1] > m:
                keep = np.argpartition(-scores, m - 1, axis=1)[:, :m]
                rows = np.take_along_axis(rows, keep, axis=1)
                scores = np.take_along_axis(scores, keep, axis=1)
            best_rows, best_scores = rows, scores
        # Exact top m: asking again can only help while m < the shard's size.
        return best_rows, best_scores, np.full(n, m >= self.size)


class _ScannShard:
    def __init__(self, record: ShardRecord, folder: Path, threads: int | None):
        listed = {name.removeprefix("scann/") for name in record.files if name.startswith("scann/")}
        self.searcher = load_scann_searcher(folder / "scann", threads, listed=listed)
        self.config = record.search
        self.size = record.entries

    def search(self, queries: np.ndarray, m: int, leaves: int | None = None, pre_reorder: int | None = None):
        """(rows, scores, exhausted): exhausted where asking for more cannot add entries."""
        m = min(m, self.size)
        config = self.config
        kwargs = {"final_num_neighbors": m}
        if config.algorithm != "brute_force":
            kwargs["pre_reorder_num_neighbors"] = max(m, pre_reorder or config.reorder_num_neighbors)
        all_leaves = True
        if config.algorithm == "tree_ah":
            leaves = min(config.num_leaves, leaves or config.leaves_to_search)
            kwargs["leaves_to_search"] = leaves
            all_leaves = leaves >= config.num_leaves
        if len(queries) >= 64:
            rows, scores = self.searcher.search_batched_parallel(queries, **kwargs)
        else:
            rows, scores = self.searcher.search_batched(queries, **kwargs)
        rows = rows.astype(np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        missing = np.isnan(scores)  # ScaNN pads with index 0 and a NaN score
        rows[missing] = -1
        scores[missing] = _SCORE_PAD
        # Fewer than m back means the leaves searched ran dry (AH and brute
        # force always fill m, since pre-reorder >= m).
        exhausted = np.full(len(rows), m >= self.size) | missing.any(axis=1)
        return rows, scores, exhausted & all_leaves


def _distinct_counts(qids: np.ndarray) -> np.ndarray:
    """Distinct non-negative values per row."""
    if qids.shape[1] == 0:
        return np.zeros(len(qids), dtype=np.int64)
    ordered = np.sort(qids, axis=1)
    fresh = (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    return fresh.sum(axis=1) + (ordered[:, 0] >= 0)


def collapse_top_k(
    query_index: np.ndarray, qids: np.ndarray, scores: np.ndarray, entry_ids: np.ndarray, n: int, k: int
) -> SearchResult:
    """Flat candidates (query, qid, score, entry) -> per query top-k distinct QIDs."""
    valid = qids >= 0
    query_index, qids, scores, entry_ids = query_index[valid], qids[valid], scores[valid], entry_ids[valid]
    # Best entry of each (query, qid): order by query, qid, score desc, entry id.
    order = np.lexsort((entry_ids, -scores, qids, query_index))
    query_index, qids, scores, entry_ids = query_index[order], qids[order], scores[order], entry_ids[order]
    first = np.ones(len(qids), dtype=bool)
    first[1:] = (qids[1:] != qids[:-1]) | (query_index[1:] != query_index[:-1])
    query_index, qids, scores, entry_ids = query_index[first], qids[first], scores[first], entry_ids[first]
    # Rank within each query by score (ties: lower QID first).
    order = np.lexsort((qids, -scores, query_index))
    query_index, qids, scores, entry_ids = query_index[order], qids[order], scores[order], entry_ids[order]
    starts = np.searchsorted(query_index, np.arange(n))
    rank = np.arange(len(query_index)) - starts[query_index]
    keep = rank < k
    out_qids = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), _SCORE_PAD, dtype=np.float32)
    out_entries = np.full((n, k), -1, dtype=np.int64)
    out_qids[query_index[keep], rank[keep]] = qids[keep]
    out_scores[query_index[keep], rank[keep]] = scores[keep]
    out_entries[query_index[keep], rank[keep]] = entry_ids[keep]
    return SearchResult(out_qids, out_scores, out_entries)


class Index:
    """A built index folder, opened for search and lookup.

    `exact=None` uses ScaNN where it is installed and the shards have
    searchers; `exact=True` always scores exactly with NumPy.
    `leaves_to_search` and `pre_reorder_num_neighbors` override the build's
    values for every search (a per-call value wins).

    Opening checks what will be trusted (mel.indexes.integrity): with `verify`
    (the default), every file's sha256 against the manifest and every vector
    for a finite unit row, in one read of each file; always, the sizes and the
    tables' value ranges. `verify=False` is for trusted local copies.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        exact: bool | None = None,
        leaves_to_search: int | None = None,
        pre_reorder_num_neighbors: int | None = None,
        threads: int | None = None,
        verify: bool = True,
        verify_folder: str | os.PathLike | None = None,
    ):
        """`verify_folder`: what a failed check tells the user to run `mel index verify` on (the
        folder by default; the whole index where this folder is one view of it)."""
        self.folder = Path(folder)
        self.manifest: IndexManifest = read_manifest(self.folder)
        refuse_pickles(self.folder)
        try:
            self._open(verify)
        except ArtifactError as exc:
            if not verify:
                raise
            raise ArtifactError(f"{exc}; `mel index verify {verify_folder or self.folder}` lists every problem") \
                from None
        has_scann = all(shard.search.uses_scann for shard in self.manifest.shards)
        if exact is False and not has_scann:
            raise ArtifactError(f"{self.folder}: this index has no ScaNN searchers; search it with exact=True")
        if exact is False and not scann_available():
            raise ArtifactError("ScaNN is not installed (Linux x86-64 only); search with exact=True")
        self.exact = bool(exact) or not has_scann or not scann_available()
        self.leaves_to_search = leaves_to_search
        self.pre_reorder_num_neighbors = pre_reorder_num_neighbors
        self.threads = threads
        self._scann: list[_ScannShard | None] = [None] * len(self.manifest.shards)
        self._by_qid: tuple[np.ndarray, np.ndarray] | None = None
        self._exact = [_ExactShard(tables) for tables in self.tables]

    def _open(self, verify: bool) -> None:
        manifest = self.manifest
        for name, record in manifest.files.items():
            (check_file if verify else _check_size)(self.folder / name, record)
        self.tables: list[ShardTables] = []
        for shard in manifest.shards:
            for name, record in shard.files.items():
                path = self.folder / shard.name / name
                if not verify:
                    _check_size(path, record)
                elif name == shard.vectors:
                    check_vectors_file(path, record, shard.entries, manifest.dim)
                else:
                    check_file(path, record)
            self.tables.append(
                ShardTables(
                    self.folder / shard.name, shard.entries, manifest.dim, shard.vectors,
                    len(manifest.kinds), len(manifest.languages),
                )  # fmt: skip
            )
        self._qid_set = load_npy(self.folder / QID_SET_FILE, QID_DTYPE, (manifest.counts.qids,))
        self._check_qids()
        self._first_entry = np.array([shard.first_entry for shard in manifest.shards], dtype=np.int64)

    def _check_qids(self) -> None:
        """The QID set is sorted and distinct (lookups rely on it), and holds every entry's QID."""
        qid_set, path = self._qid_set, self.folder / QID_SET_FILE
        if len(qid_set) and (qid_set[0] <= 0 or (len(qid_set) > 1 and not (np.diff(qid_set) > 0).all())):
            raise ArtifactError(f"{path}: QIDs are not distinct positive numbers in order (the file is damaged)")
        for shard, tables in zip(self.manifest.shards, self.tables):
            position = np.searchsorted(qid_set, tables.qids).clip(0, max(0, len(qid_set) - 1))
            if len(qid_set) == 0 or not (qid_set[position] == tables.qids).all():
                raise ArtifactError(f"{self.folder / shard.name}/qids.npy: QIDs missing from {path} "
                                    "(the index is damaged)")

    # -- facts ---------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return self.manifest.counts.entries

    @property
    def num_qids(self) -> int:
        return self.manifest.counts.qids

    @property
    def counts(self):
        return self.manifest.counts

    def contains(self, qids: Iterable[str | int] | np.ndarray) -> np.ndarray:
        """Whether each QID has at least one entry in the index (bool array)."""
        wanted = parse_qids(qids)
        if len(self._qid_set) == 0:
            return np.zeros(len(wanted), dtype=bool)
        position = np.searchsorted(self._qid_set, wanted).clip(0, len(self._qid_set) - 1)
        return self._qid_set[position] == wanted

    def _locate(self, entry_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        entry_ids = np.asarray(entry_ids, dtype=np.int64)
        if entry_ids.size and (entry_ids.min() < 0 or entry_ids.max() >= len(self)):
            raise IndexError(f"entry ids must be in [0, {len(self)})")
        shard = np.searchsorted(self._first_entry, entry_ids, side="right") - 1
        return shard, entry_ids - self._first_entry[shard]

    def entry_qids(self, entry_ids: np.ndarray) -> np.ndarray:
        """The QID (int64) of each entry id."""
        shards, rows = self._locate(entry_ids)
        out = np.empty(len(shards), dtype=np.int64)
        for number in np.unique(shards):
            mask = shards == number
            out[mask] = self.tables[number].qids[rows[mask]]
        return out

    def entries_of(self, qids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of each QID: (position in `qids`, entry id) pairs, grouped by position.

        The QID -> entries map is built on first use (16 bytes an entry).
        """
        if self._by_qid is None:
            all_qids = np.concatenate([tables.qids for tables in self.tables]) if self.tables \
                else np.zeros(0, np.int64)
            order = np.argsort(all_qids, kind="stable")
            self._by_qid = (all_qids[order], order.astype(np.int64))
        ordered, entries = self._by_qid
        qids = np.asarray(qids, dtype=np.int64)
        lo, hi = np.searchsorted(ordered, qids, "left"), np.searchsorted(ordered, qids, "right")
        counts = hi - lo
        owner = np.repeat(np.arange(len(qids)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, entries[np.repeat(lo, counts) + offsets]

    def entry_langs(self, entry_ids: np.ndarray) -> list[str]:
        """The language of each entry id."""
        shards, rows = self._locate(entry_ids)
        codes = np.empty(len(shards), dtype=np.int64)
        for number in np.unique(shards):
            mask = shards == number
            codes[mask] = self.tables[number].langs[rows[mask]]
        return [self.manifest.languages[c] for c in codes.tolist()]

    def entry_labels(self, entry_ids: np.ndarray) -> list[str]:
        """The stored label of each entry id (for label entries: the name itself)."""
        shards, rows = self._locate(entry_ids)
        return [self.tables[int(s)].labels[int(r)] for s, r in zip(shards.tolist(), rows.tolist())]

    def entry(self, entry_id: int) -> Entry:
        shards, rows = self._locate(np.array([entry_id]))
        tables, row = self.tables[int(shards[0])], int(rows[0])
        return Entry(
            entry_id=int(entry_id),
            qid=qid_to_str(tables.qids[row]),
            kind=self.manifest.kinds[int(tables.kinds[row])],
            lang=self.manifest.languages[int(tables.langs[row])],
            label=tables.labels[row],
        )

    def vectors(self, entry_ids: np.ndarray) -> np.ndarray:
        """Stored (unit) vectors of the given entries, (n, dim) float32."""
        shards, rows = self._locate(entry_ids)
        out = np.empty((len(shards), self.dim), dtype=VECTOR_DTYPE)
        for number in np.unique(shards):
            mask = shards == number
            out[mask] = self.tables[number].vectors[rows[mask]]
        return out

    # -- search --------------------------------------------------------------

    def _shard(self, number: int, exact: bool):
        if exact:
            return self._exact[number]
        if self._scann[number] is None:
            shard = self.manifest.shards[number]
            self._scann[number] = _ScannShard(shard, self.folder / shard.name, self.threads)
        return self._scann[number]

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        exact: bool | None = None,
        final_num_neighbors: int | None = None,
        leaves_to_search: int | None = None,
        pre_reorder_num_neighbors: int | None = None,
        batch_size: int = 4096,
    ) -> SearchResult:
        """Top-k distinct QIDs for each query vector (rows are L2-normalised here).

        `final_num_neighbors` is how many entries each shard returns at first
        (default: k times the mean entries per QID); it doubles as needed.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        queries = np.asarray(queries, dtype=VECTOR_DTYPE)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries of shape {queries.shape}, expected (n, {self.dim})")
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries = queries / np.maximum(norms, np.finfo(np.float32).tiny)
        exact = self.exact if exact is None else exact
        if not exact and self.exact:
            raise ArtifactError(f"{self.folder}: ScaNN search is not available for this index")
        per_qid = max(1.0, len(self) / max(1, self.num_qids))
        first_m = final_num_neighbors or math.ceil(k * per_qid)
        leaves = leaves_to_search or self.leaves_to_search
        pre_reorder = pre_reorder_num_neighbors or self.pre_reorder_num_neighbors
        parts = [
            self._search_batch(queries[start : start + batch_size], k, exact, first_m, leaves, pre_reorder)
            for start in range(0, len(queries), batch_size)
        ]
        if not parts:
            empty = np.empty((0, k))
            return SearchResult(empty.astype(np.int64), empty.astype(np.float32), empty.astype(np.int64))
        return SearchResult(
            np.concatenate([part.qids for part in parts]),
            np.concatenate([part.scores for part in parts]),
            np.concatenate([part.entry_ids for part in parts]),
        )

    def _search_batch(self, queries, k, exact, first_m, leaves, pre_reorder) -> SearchResult:
        found_query, found_qid, found_score, found_entry = [], [], [], []
        for number, tables in enumerate(self.tables):
            shard = self._shard(number, exact)
            pending = np.arange(len(queries))
            m, shard_leaves = first_m, leaves
            while pending.size:
                rows, scores, exhausted = shard.search(queries[pending], m, shard_leaves, pre_reorder)
                qids = np.where(rows >= 0, tables.qids[rows.clip(0)], -1)
                done = exhausted | (_distinct_counts(qids) >= k)
                found_query.append(np.repeat(pending[done], rows.shape[1]))
                found_qid.append(qids[done].ravel())
                found_score.append(scores[done].ravel())
                found_entry.append(np.where(rows[done] >= 0, rows[done] + self._first_entry[number], -1).ravel())
                pending = pending[~done]
                if pending.size:
                    if (rows[~done] < 0).any() and isinstance(shard, _ScannShard):
                        # The leaves searched ran dry before m entries: widen the search.
                        shard_leaves = 2 * min(shard.config.num_leaves, shard_leaves or shard.config.leaves_to_search)
                    m *= 2
        return collapse_top_k(
            np.concatenate(found_query) if found_query else np.empty(0, np.int64),
            np.concatenate(found_qid) if found_qid else np.empty(0, np.int64),
            np.concatenate(found_score) if found_score else np.empty(0, np.float32),
            np.concatenate(found_entry) if found_entry else np.empty(0, np.int64),
            len(queries),
            k,
        )


def _check_size(path: Path, record: FileRecord) -> None:
    check_size(path, record.bytes)


def open_index(folder: str | os.PathLike, **options) -> Index:
    return Index(folder, **options)
