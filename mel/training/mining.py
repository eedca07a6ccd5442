"""Hard negatives through the index search API (thesis 5.2).

For each mention: retrieve the k nearest distinct QIDs from the index of the
current model's entity embeddings, drop the gold QID (and any repeated QID),
and sample `neg` of the rest uniformly without replacement; where fewer than
`neg` remain, search again with twice the k, for those mentions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mel.errors import InputError
from mel.indexes.searcher import Index


@dataclass
class MiningStats:
    """What mining did, for the log: how often k had to grow, and how far."""

    mentions: int = 0
    grown: int = 0  # mentions that needed a k larger than the starting one
    max_k: int = 0
    searches: int = 0
    hard_rank_sum: float = 0.0  # mean rank (0-based) of the sampled negatives among the candidates
    gold_in_top_k: int = 0  # mentions whose gold QID was among the first k results

    def add(self, other: MiningStats) -> None:
        self.mentions += other.mentions
        self.grown += other.grown
        self.max_k = max(self.max_k, other.max_k)
        self.searches += other.searches
        self.hard_rank_sum += other.hard_rank_sum
        self.gold_in_top_k += other.gold_in_top_k

    def to_json(self) -> dict:
        n = max(1, self.mentions)
        return {"mentions": self.mentions, "grown": self.grown, "max_k": self.max_k, "searches": self.searches,
                "mean_negative_rank": round(self.hard_rank_sum / n, 3),
                "gold_in_top_k": round(self.gold_in_top_k / n, 4)}

    @classmethod
    def from_json(cls, data: dict) -> MiningStats:
        n = int(data.get("mentions", 0))
        return cls(mentions=n, grown=int(data.get("grown", 0)), max_k=int(data.get("max_k", 0)),
                   searches=int(data.get("searches", 0)),
                   hard_rank_sum=float(data.get("mean_negative_rank", 0.0)) * n,
                   gold_in_top_k=round(float(data.get("gold_in_top_k", 0.0)) * n))


def _distinct_in_order(values: np.ndarray) -> np.ndarray:
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


class NegativeMiner:
    """Samples hard negatives for batches of query vectors from an opened Index."""

    def __init__(self, index: Index, negatives: int, k: int = 100, *, exact: bool | None = None,
                 all_qids: np.ndarray | None = None):
        if negatives < 1 or k < 1:
            raise ValueError("negatives and k must be at least 1")
        if index.num_qids < negatives + 1:
            raise InputError(f"the KB has {index.num_qids} distinct entities; --neg {negatives} needs at least "
                             f"{negatives + 1} (lower --neg or give a larger KB)")
        self.index = index
        self.negatives = negatives
        self.k = k
        self.exact = exact
        self.all_qids = all_qids  # the KB's distinct QIDs: the pool for the rare fill-up

    def candidates(self, queries: np.ndarray, gold: np.ndarray, stats: MiningStats | None = None
                   ) -> list[np.ndarray]:
        """Per query, the retrieved distinct QIDs other than the gold one, best
        first: at least `negatives` of them (k doubles until there are)."""
        stats = stats if stats is not None else MiningStats()
        gold = np.asarray(gold, dtype=np.int64)
        out: list[np.ndarray | None] = [None] * len(gold)
        pending = np.arange(len(gold))
        k = min(self.k, self.index.num_qids)
        first = True
        while pending.size:
            result = self.index.search(queries[pending], k=k, exact=self.exact)
            stats.searches += 1
            still = []
            for row, qids in zip(pending, result.qids):
                if first:
                    stats.gold_in_top_k += bool((qids == gold[row]).any())
                found = _distinct_in_order(qids[(qids >= 0) & (qids != gold[row])])
                if len(found) >= self.negatives or k >= self.index.num_qids:
                    out[row] = found
                else:
                    still.append(row)
            stats.max_k = max(stats.max_k, k)
            pending = np.array(still, dtype=np.int64)
            if pending.size and first:
                stats.grown += len(pending)
            first = False
            k = min(2 * k, self.index.num_qids)
        stats.mentions += len(gold)
        return out  # type: ignore[return-value]

    def sample(self, queries: np.ndarray, gold: np.ndarray, rng: np.random.Generator,
               stats: MiningStats | None = None) -> np.ndarray:
        """(n, negatives) int64 QIDs: uniform samples without replacement from each
        query's candidates. Should approximate search return too few even at
        k = all entities, the rest is drawn uniformly from `all_qids`."""
        stats = stats if stats is not None else MiningStats()
        found = self.candidates(queries, gold, stats)
        width = max((len(c) for c in found), default=0)
        table = np.full((len(found), max(width, self.negatives)), -1, dtype=np.int64)
        for row, qids in enumerate(found):
            table[row, : len(qids)] = qids
        # Uniform without replacement, vectorised: the `negatives` smallest of
        # independent random keys, invalid slots keyed +inf.
        keys = rng.random(table.shape)
        keys[table < 0] = np.inf
        picked = np.argpartition(keys, self.negatives - 1, axis=1)[:, : self.negatives]
        negatives = np.take_along_axis(table, picked, axis=1)
        stats.hard_rank_sum += float(np.where(negatives >= 0, picked, 0).mean(axis=1).sum())
        short = np.flatnonzero((negatives < 0).any(axis=1))
        for row in short.tolist():  # only with approximate search that comes back short
            negatives[row] = self._fill(negatives[row], int(gold[row]), rng)
        return negatives

    def _fill(self, row: np.ndarray, gold: int, rng: np.random.Generator) -> np.ndarray:
        chosen = [int(q) for q in row if q >= 0]
        pool = self.all_qids
        if pool is None or len(pool) < self.negatives + 1:
            raise RuntimeError("approximate search returned too few entities and no QID pool was given")
        while len(chosen) < self.negatives:
            qid = int(pool[rng.integers(len(pool))])
            if qid != gold and qid not in chosen:
                chosen.append(qid)
        return np.array(chosen, dtype=np.int64)
