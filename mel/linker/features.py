"""Candidates of a batch of mentions, and their features.

Candidates are the union of the string view's top k (mention string vs names), the
context view's top k (mention in context vs descriptions and training contexts), the
KB name table's entities for the mention's loosely normalised string (and, for a mention
written as an acronym, the entities whose names have those initials), and the alias
table's (training links; exact-normalised lookup, fuzzy for a miss). Every candidate
gets every view's score, whichever source found it: a candidate missing from a view's
top k is scored against its own entries in that view.

Features (FEATURES, one column each):
- string_*, context_*: the view's cosine, rank (k when not in its top k), the gap to
  the view's best candidate, whether the view found it, whether the index has the view;
- exact, folded, loose: the mention equals the candidate's best-matching name, case-
  folded, or loosely normalised (accents, case, punctuation); acronym: the mention is
  written as an acronym ("UK", "S.F.") of one of its names ("United Kingdom"); name_ratio and
  name_token_set: RapidFuzz similarity to the nearest name; names: how many names the
  entity has; ambiguity: how many entities share the mention's loose name;
- prior, prior_count, link_popularity, has_links, alias_found: P(entity | alias) and
  counts from training links, and the entity's total links; prior_gap: the mention's best
  prior minus this one's (a strong prior for another entity counts against an exact label);
- log_qid: log10 of the QID number (older Wikidata items are the better-known ones);
  qid_gap: for a candidate with a name of token-set similarity 1 to the mention (the name
  holds all the mention's words, or the mention all the name's), its log_qid minus the
  lowest among such candidates of the mention ("President" -> the older "President of the
  United States" beside an item labelled "President"), -1 for any other candidate;
- lang_match: the best-matching name is in the document's language;
- mention_length, mention_tokens, mention_upper: the mention's shape;
- coref_longer: a longer mention of the same document containing this one's words
  ("Jordan" after "Michael Jordan") was first linked to this entity; same_top: how many
  other mentions of the document were first linked to it; coherence: its similarity to
  what the document's other mentions were first linked to;
- pronoun: the mention is a personal pronoun looked up as its antecedent's string (mel.pronouns).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from mel.aliases import AliasTable, normalize_alias
from mel.indexes.searcher import Index, SearchResult
from mel.initials import initials_of_rows
from mel.mentions import document_groups

FEATURES = (
    "string_score", "string_rank", "string_gap", "string_found", "has_string",
    "context_score", "context_rank", "context_gap", "context_found", "has_context",
    "exact", "folded", "loose", "acronym", "name_ratio", "name_token_set", "names", "ambiguity",
    "prior", "prior_count", "link_popularity", "has_links", "alias_found", "prior_gap",
    "log_qid", "qid_gap", "lang_match",
    "mention_length", "mention_tokens", "mention_upper",
    "coref_longer", "same_top", "coherence", "pronoun",
)
COLUMN = {name: i for i, name in enumerate(FEATURES)}
VIEW_BITS = {"string": 1, "context": 2, "names": 4, "aliases": 8, "initials": 16}
MAX_NAME_HITS = 50  # entities taken from one name-table or alias-table hit (most named first)
FUZZY_MAX_ALIASES = 1_000_000  # fuzzy alias lookup only in tables up to this size
FUZZY_CUTOFF = 80


@dataclass
class CandidateRows:
    """Row r: candidate `qid[r]` of mention `mention[r]`; X[r] its features; found_by[r] its sources."""

    mention: np.ndarray  # int64
    qid: np.ndarray  # int64
    X: np.ndarray  # float32 (rows, len(FEATURES))
    found_by: np.ndarray  # uint8 bits of VIEW_BITS

    @classmethod
    def empty(cls) -> CandidateRows:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(FEATURES)), np.float32),
                   np.zeros(0, np.uint8))


@dataclass
class ViewScores:
    """A view's best score, rank and best entry for every candidate row."""

    score: np.ndarray
    rank: np.ndarray
    entry: np.ndarray
    found: np.ndarray


def table_hits(table: AliasTable | None, key: str) -> tuple[list[int], list[int]]:
    if table is None or not key:
        return [], []
    row = table.find(key)
    if row < 0:
        return [], []
    return table.qids_of(row)[:MAX_NAME_HITS].tolist(), table.counts_of(row)[:MAX_NAME_HITS].tolist()


def fuzzy_hits(table: AliasTable, key: str) -> tuple[list[int], list[int]]:
    """The entities of the nearest aliases (RapidFuzz ratio >= FUZZY_CUTOFF) when the exact lookup missed."""
    if not key or len(table) > FUZZY_MAX_ALIASES or len(table) == 0:
        return [], []
    qids: list[int] = []
    counts: list[int] = []
    for _, _, row in process.extract(key, table.strings(), scorer=fuzz.ratio, limit=3, score_cutoff=FUZZY_CUTOFF):
        found, found_counts = table.qids_of(row)[:MAX_NAME_HITS], table.counts_of(row)[:MAX_NAME_HITS]
        qids += found.tolist()
        counts += found_counts.tolist()
    return qids, counts


class InitialsIndex:
    """Acronym -> the entities with a name of those initials: the index's initials table, or for an
    index built without one (by an earlier mel), a map made from the name table on the first lookup
    (one pass over its names, about 2.6 s per million names, measured on 753k; kept for the process).
    Lookups are cached: in a large KB a common acronym stands for many thousands of entities."""

    CACHED_KEYS = 4096

    def __init__(self, table: AliasTable, initials: AliasTable | None = None) -> None:
        self.table = table
        self.initials = initials
        self._rows: dict[str, list[int]] | None = None
        self._cache: dict[str, tuple[frozenset[int], list[int]]] = {}

    def lookup(self, key: str) -> tuple[frozenset[int], list[int]]:
        """(every entity with a name of these initials, the candidates among them: lowest QID first, at
        most MAX_NAME_HITS) for an acronym_key ("" has none)."""
        found = self._cache.get(key)
        if found is None:
            entities = frozenset(self._entities(key)) if key else frozenset()
            found = (entities, heapq.nsmallest(MAX_NAME_HITS, entities))
            if len(self._cache) >= self.CACHED_KEYS:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _entities(self, key: str) -> list[int]:
        if self.initials is not None:
            row = self.initials.find(key)
            return self.initials.qids_of(row).tolist() if row >= 0 else []
        if self._rows is None:
            rows: dict[str, list[int]] = {}
            for row, keys in initials_of_rows(self.table):
                for initials in keys:
                    rows.setdefault(initials, []).append(row)
            self._rows = rows
        return [int(q) for row in self._rows.get(key, ()) for q in self.table.qids_of(row).tolist()]


def view_scores(index: Index, queries: np.ndarray, result: SearchResult, mention: np.ndarray,
                qid: np.ndarray) -> ViewScores:
    """Score, rank and best entry in one view for each (mention, qid) row; rows missing from the
    view's top k are scored against the candidate's own entries in the view."""
    k = result.qids.shape[1]
    score = np.full(len(qid), -1.0, dtype=np.float32)
    rank = np.full(len(qid), k, dtype=np.float32)
    entry = np.full(len(qid), -1, dtype=np.int64)
    # Each row's place in the view's top k: (mention, qid) pairs as one int64 key, matched by search.
    at_m, at_c = np.nonzero(result.qids >= 0)
    span = int(max(result.qids.max(initial=0), qid.max(initial=0))) + 1
    view_keys = at_m.astype(np.int64) * span + result.qids[at_m, at_c]
    order = np.argsort(view_keys, kind="stable")
    sorted_keys = view_keys[order]
    row_keys = mention.astype(np.int64) * span + qid
    place = np.searchsorted(sorted_keys, row_keys).clip(max=max(len(sorted_keys) - 1, 0))
    hit = sorted_keys[place] == row_keys if len(sorted_keys) else np.zeros(len(qid), dtype=bool)
    m_hit, c_hit = at_m[order[place[hit]]], at_c[order[place[hit]]]
    score[hit] = result.scores[m_hit, c_hit]
    rank[hit] = c_hit
    entry[hit] = result.entry_ids[m_hit, c_hit]
    found_mask = rank < k
    rows = np.flatnonzero(~hit)  # not in the view's top k
    if len(rows):
        owner, entries = index.entries_of(qid[rows])
        if len(entries):
            dots = np.einsum("ij,ij->i", index.vectors(entries), queries[mention[rows][owner]])
            order = np.lexsort((-dots, owner))
            first = np.ones(len(order), dtype=bool)
            first[1:] = owner[order][1:] != owner[order][:-1]
            best = order[first]
            score[rows[owner[best]]] = dots[best]
            entry[rows[owner[best]]] = entries[best]
    return ViewScores(score, rank, entry, found_mask)


def gap_to_best(score: np.ndarray, mention: np.ndarray, n: int) -> np.ndarray:
    """Each row's distance to the best score among its mention's rows."""
    top = np.full(n, -1.0, dtype=np.float32)
    np.maximum.at(top, mention, score)
    return top[mention] - score


def _contains_words(short: str, long: str) -> bool:
    """Whether the words of `short` appear consecutively in `long` (both loosely normalised)."""
    if not short or len(long) <= len(short):
        return False
    return f" {short} " in f" {long} "


def mention_slices(mention: np.ndarray, n: int) -> list[np.ndarray]:
    """For each of `n` mentions, its rows (in row order)."""
    by_mention = np.argsort(mention, kind="stable")
    bounds = np.searchsorted(mention[by_mention], np.arange(n + 1)).tolist()
    return [by_mention[bounds[m]:bounds[m + 1]] for m in range(n)]


def first_rows(mention: np.ndarray, n: int, *keys: np.ndarray) -> np.ndarray:
    """Each of `n` mentions' first row when its rows are sorted by `keys` (np.lexsort's order: the
    last key decides first), -1 for a mention without rows."""
    first = np.full(n, -1, dtype=np.int64)
    order = np.lexsort((*keys, mention))
    if len(order):
        ordered = mention[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        first[ordered[starts]] = order[starts]
    return first


def first_choices(X: np.ndarray, mention: np.ndarray, n: int) -> np.ndarray:
    """Each of `n` mentions' first-pass choice, the row the document features start from: a loose
    name match first, then the best string score (-1 for a mention without candidates)."""
    return first_rows(mention, n, -X[:, COLUMN["string_score"]], -X[:, COLUMN["loose"]])


def document_features(X: np.ndarray, rows: CandidateRows, keys: Sequence[str], docs: Sequence[int | None],
                      vectors: np.ndarray, slices: list[np.ndarray], first: np.ndarray | None = None) -> None:
    """coref_longer, same_top and coherence of every row, from the rows chosen for the document's
    other mentions: `first` (one row or -1 per mention; by default first_choices). `vectors` is
    each row's best string-view entry vector, `slices` each mention's rows (mention_slices)."""
    n = len(keys)
    if first is None:
        first = first_choices(X, rows.mention, n)
    for name in ("coref_longer", "same_top", "coherence"):
        X[:, COLUMN[name]] = 0.0  # a mention alone in its document has no such evidence
    # The work is done a document and a mention at a time, never a candidate at a time (a mention
    # has some 50 candidates, and each tiny matrix product costs BLAS's thread start-up).
    for members in document_groups(docs):
        chosen = [m for m in members if first[m] >= 0]  # the members with a choice
        if len(members) < 2 or not chosen:
            continue
        top_qids = rows.qid[first[chosen]]
        spans = [slices[m] for m in members]
        sims = vectors[np.concatenate(spans)] @ vectors[first[chosen]].T  # every candidate x every choice
        at = 0
        for m, mine in zip(members, spans):
            part, at = sims[at:at + len(mine)], at + len(mine)
            others = np.array([c for c, o in enumerate(chosen) if o != m], dtype=np.int64)
            if not len(mine) or not len(others):
                continue
            qids = rows.qid[mine]
            longer = [top_qids[c] for c in others.tolist() if _contains_words(keys[m], keys[chosen[c]])]
            X[mine, COLUMN["coref_longer"]] = np.isin(qids, longer)
            X[mine, COLUMN["same_top"]] = (qids[:, None] == top_qids[others][None, :]).sum(axis=1)
            # Mean similarity to the (at most) three closest of the other mentions' first choices.
            X[mine, COLUMN["coherence"]] = np.sort(part[:, others], axis=1)[:, -3:].mean(axis=1)


def qid_gap(X: np.ndarray, mention: np.ndarray, n: int) -> np.ndarray:
    """The qid_gap column, from the log_qid and name_token_set columns of each mention's rows."""
    contains = X[:, COLUMN["name_token_set"]] >= 0.999
    age = X[:, COLUMN["log_qid"]].astype(np.float64)
    lowest = np.full(n, np.inf)
    np.minimum.at(lowest, mention[contains], age[contains])
    return np.where(contains, age - lowest[mention], -1.0).astype(np.float32)


def loose_key(text: str) -> str:
    return normalize_alias(text, loose=True)


def mention_shape(text: str) -> tuple[float, float, float]:
    letters = [c for c in text if c.isalpha()]
    upper = float(bool(letters) and all(c.isupper() for c in letters))
    return float(len(text)), float(len(text.split())), upper


def log_qid(qids: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(qids, 1).astype(np.float64)).astype(np.float32)


def link_totals(table: AliasTable) -> np.ndarray:
    """Total link count of each QID of the table's qid_set."""
    positions = np.searchsorted(table.qid_set, np.asarray(table.qids))
    return np.bincount(positions, weights=np.asarray(table.counts, dtype=np.float64),
                       minlength=len(table.qid_set))


def popularity(table: AliasTable, totals: np.ndarray, qids: np.ndarray) -> np.ndarray:
    if len(table.qid_set) == 0:
        return np.zeros(len(qids), dtype=np.float32)
    position = np.searchsorted(table.qid_set, qids).clip(0, len(table.qid_set) - 1)
    present = np.asarray(table.qid_set)[position] == qids
    return np.where(present, np.log1p(totals[position]), 0.0).astype(np.float32)


def safe_log1p(value: float) -> float:
    return math.log1p(max(0.0, value))
