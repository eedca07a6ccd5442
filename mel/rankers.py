"""Ranking methods: mentions in, the top-k distinct QIDs of each out, with their scores.

- biencoder / olpeat / labels: a Retriever (index + model). The index's
  manifest says how queries are encoded: in context for description and
  context indexes, the mention string alone for label indexes (OLPEAT: alias
  strings; labels: entity labels).
- alias: exact lookup in an alias table; a QID's score is its share of the
  alias's links, P(QID | alias).
- fuzzy: exact lookup, and for misses the nearest aliases by normalised Indel
  distance (RapidFuzz `cdist`, all cores); a QID's score is 1 - the distance of
  the nearest alias that links it.

Every ranker has one protocol, used by `mel link` and `mel eval` alike. It works
in two steps so that the cheap, GIL-bound part runs in the pipeline's reader thread
while the calling thread encodes and searches: `prepare(spans)` (tokenise or
normalise) and `rank(prepared, k)` -> a `Ranking`: (n, k) QID numbers, best first,
padded with -1, and their scores. `in_kb(qids)` says which QIDs the method can
find at all (for the upper bound); `describe()` is the method's part of a report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mel.aliases import AliasTable
from mel.link_sketch import LinkSketch
from mel.mentions import MentionSpan
from mel.retrieval import Retriever

# Scores closer than this count as equal when OLPEAT breaks ties by entry order.
_TIE = 1e-5
_PAD_SCORE = -np.inf


@dataclass(frozen=True)
class Ranking:
    """Row i: mention i's candidates, best first: QID numbers (-1 pads) and their scores."""

    qids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32; -inf pads
    views: np.ndarray | None = None  # (n, k) uint8: bits of the sources that found each (the fused linker)
    features: np.ndarray | None = None  # (n, k, features) float32, when asked to explain
    probabilities: bool = False  # scores are calibrated probabilities

    @classmethod
    def empty(cls, n: int, k: int) -> Ranking:
        return cls(np.full((n, k), -1, dtype=np.int64), np.full((n, k), _PAD_SCORE, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.qids)


class Ranker(Protocol):
    name: str
    notes: list[str]

    def prepare(self, spans: Sequence[MentionSpan]) -> Any: ...

    def rank(self, prepared: Any, k: int) -> Ranking: ...

    def in_kb(self, gold: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


@dataclass
class RetrieverRanker:
    """biencoder, olpeat, labels: encode as the index says, search, top-k distinct QIDs.

    With `entry_order_ties` (OLPEAT), candidates whose scores tie are ordered
    by their best entry's id: an alias table's QIDs are written most linked
    first, so an alias shared by several entities ranks them by link count
    (its entries have identical vectors, so their scores tie exactly).
    """

    retriever: Retriever
    name: str = "biencoder"
    entry_order_ties: bool = False
    notes: list[str] = field(default_factory=list)
    # The alias table of the linker index whose view this is: built with --links, that index's
    # context view holds the links' contexts too.
    links_table: AliasTable | None = None

    def training_links(self) -> LinkSketch | None:
        return self.links_table.link_sketch() if self.links_table is not None else None

    @property
    def encode_stage(self) -> Callable[[list[list[int]]], np.ndarray] | None:
        """The encoder as a pipeline stage of its own on CUDA (the GPU then overlaps tokenising,
        searching and writing); on CPU encoding and searching share the cores, so none."""
        return self.retriever.encode if self.retriever.encoder.device == "cuda" else None

    def prepare(self, spans: Sequence[MentionSpan]) -> list[list[int]]:
        return self.retriever.query_ids(spans)

    def rank(self, prepared: list[list[int]] | np.ndarray, k: int) -> Ranking:
        """Top-k of tokenised queries, or of their vectors when the encode stage made them."""
        if not len(prepared):
            return Ranking.empty(0, k)
        vectors = prepared if isinstance(prepared, np.ndarray) else self.retriever.encode(prepared)
        result = self.retriever.search_vectors(vectors, k)
        if not self.entry_order_ties:
            return Ranking(result.qids, result.scores)
        order = tie_order(result.scores, result.entry_ids, result.qids >= 0)
        return Ranking(np.take_along_axis(result.qids, order, axis=1),
                       np.take_along_axis(result.scores, order, axis=1))

    def in_kb(self, gold: np.ndarray) -> np.ndarray:
        return self.retriever.index.contains(gold)

    @property
    def seconds(self) -> dict[str, float]:
        """Wall seconds spent encoding and searching so far."""
        return self.retriever.seconds

    def describe(self) -> dict:
        return {**self.retriever.describe(),
                "tie_break": "best entry id (alias link count)" if self.entry_order_ties else "lower QID"}


def tie_order(scores: np.ndarray, entry_ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Column order that re-sorts each run of tied scores (rows sorted by score) by entry id;
    padding stays last."""
    n, k = scores.shape
    if n == 0 or k < 2:
        return np.broadcast_to(np.arange(k), (n, k)).copy()
    with np.errstate(invalid="ignore"):  # -inf - -inf in the padding
        breaks = (scores[:, :-1].astype(np.float64) - scores[:, 1:]) > _TIE
    group = np.concatenate([np.zeros((n, 1), dtype=np.int64), np.cumsum(breaks, axis=1)], axis=1)
    group[~valid] = k  # padding after every real candidate
    entries = np.where(valid, entry_ids, np.iinfo(np.int64).max)
    rows = np.repeat(np.arange(n), k)
    return np.lexsort((entries.ravel(), group.ravel(), rows)).reshape(n, k) - (np.arange(n) * k)[:, None]


@dataclass
class AliasRanker:
    """Exact lookup of the normalised mention string; a miss has no candidates."""

    table: AliasTable
    name: str = "alias"
    notes: list[str] = field(default_factory=list)
    exact_matches: int = 0
    queries: int = 0

    def training_links(self) -> LinkSketch | None:
        return self.table.link_sketch()

    def prepare(self, spans: Sequence[MentionSpan]) -> list[str]:
        return [self.table.normalize(s.string) for s in spans]

    def _exact(self, strings: Sequence[str], k: int) -> tuple[Ranking, list[int]]:
        out = Ranking.empty(len(strings), k)
        misses = []
        for i, string in enumerate(strings):
            row = self.table.find(string)
            if row < 0:
                misses.append(i)
                continue
            qids, counts = self.table.qids_of(row)[:k], self.table.counts_of(row)
            out.qids[i, : len(qids)] = qids
            out.scores[i, : len(qids)] = counts[: len(qids)] / max(1, int(counts.sum()))
        self.queries += len(strings)
        self.exact_matches += len(strings) - len(misses)
        return out, misses

    def rank(self, prepared: list[str], k: int) -> Ranking:
        return self._exact(prepared, k)[0]

    def in_kb(self, gold: np.ndarray) -> np.ndarray:
        return self.table.contains(gold)

    def describe(self) -> dict:
        return {"aliases": self.table.describe(), "exact_matches": self.exact_matches, "queries": self.queries}


@dataclass
class FuzzyRanker(AliasRanker):
    """Exact lookup; misses take the QIDs of the nearest aliases by normalised Indel distance.

    Nearest aliases are ordered by distance, then by the alias's link count
    (more linked first), then by the alias itself; their QIDs follow in that
    order (each alias's by count), each QID once, until k distinct QIDs.
    """

    name: str = "fuzzy"
    workers: int = -1
    max_cells: int = 1 << 25  # distances held at once (float32): 128 MiB

    def rank(self, prepared: list[str], k: int) -> Ranking:
        out, misses = self._exact(prepared, k)
        if not misses or len(self.table) == 0:
            return out
        from rapidfuzz import process
        from rapidfuzz.distance import Indel

        choices = self.table.strings()
        totals = self.table.alias_totals()
        step = max(1, self.max_cells // len(choices))
        for lo in range(0, len(misses), step):
            rows = misses[lo : lo + step]
            distances = process.cdist([prepared[i] for i in rows], choices, scorer=Indel.normalized_distance,
                                      dtype=np.float32, workers=self.workers)
            for row, d in zip(rows, distances):
                found = self._nearest_qids(d, totals, k)
                out.qids[row, : len(found)] = list(found)
                out.scores[row, : len(found)] = list(found.values())
        return out

    def _nearest_qids(self, distances: np.ndarray, totals: np.ndarray, k: int) -> dict[int, float]:
        """{QID: 1 - distance of its nearest alias}, at most k, in rank order."""
        n = len(distances)
        m = min(n, max(4 * k, 16))
        while True:
            top = np.argpartition(distances, m - 1)[:m] if m < n else np.arange(n)
            order = top[np.lexsort((top, -totals[top], distances[top]))]
            found: dict[int, float] = {}
            for alias in order:
                for qid in self.table.qids_of(int(alias)):
                    found.setdefault(int(qid), 1.0 - float(distances[alias]))
                    if len(found) == k:
                        break
                if len(found) == k:
                    break
            # The m nearest may hold fewer than k distinct QIDs: widen, unless that was all.
            if len(found) == k or m == n:
                return found
            m = min(n, 4 * m)

    def describe(self) -> dict:
        return {**super().describe(), "distance": "rapidfuzz Indel.normalized_distance", "workers": self.workers}
