"""The fused linker: every view and table of a linker index, features, reranker, calibrated probabilities.

It is a ranker like any other (`mel.rankers` protocol): `prepare` tokenises each
mention twice (its string for the string view, its context window for the context
view) and normalises its string (for a personal pronoun, its antecedent's string:
mel.pronouns); `rank` encodes, searches both views, looks the tables up, computes the
features (mel.linker.features) and scores every candidate with the reranker. A
candidate's score is the calibrated probability that it is the mention's entity;
`Ranking.views` says which sources found it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz, process

from mel.aliases import AliasTable
from mel.encoding import Encoder
from mel.indexes.searcher import Index
from mel.initials import acronym_key
from mel.link_sketch import LinkSketch
from mel.linker.features import (
    COLUMN,
    FEATURES,
    VIEW_BITS,
    CandidateRows,
    InitialsIndex,
    document_features,
    fuzzy_hits,
    gap_to_best,
    link_totals,
    log_qid,
    loose_key,
    mention_shape,
    mention_slices,
    popularity,
    qid_gap,
    safe_log1p,
    table_hits,
    view_scores,
)
from mel.linker.folder import LinkerIndex
from mel.linker.model import Reranker
from mel.mentions import MentionSpan
from mel.pronouns import antecedents
from mel.rankers import Ranking

VIEW_K = 30  # candidates taken from each view


@dataclass
class Prepared:
    spans: list[MentionSpan]
    strings: list[str]  # what each mention is looked up by: its string, or a pronoun's antecedent's
    pronoun: np.ndarray  # bool: the mention is a pronoun looked up as its antecedent
    keys: list[str]
    acronyms: list[str]  # acronym_key of each mention ("" when not written as one)
    string_ids: list[list[int]] | None
    context_ids: list[list[int]] | None
    # Filled by `FusedLinker.encode` (the encoder's own pipeline stage on CUDA), else in `rank`.
    string_q: np.ndarray | None = None
    context_q: np.ndarray | None = None
    encoded: bool = False


@dataclass
class FusedLinker:
    index: LinkerIndex
    encoder: Encoder
    reranker: Reranker
    string: Index | None
    context: Index | None
    explain: bool = False
    view_k: int = VIEW_K
    name: str = "linker"
    notes: list[str] = field(default_factory=list)
    probabilities: bool = True
    seconds: dict[str, float] = field(default_factory=lambda: {"encode": 0.0, "search": 0.0, "features": 0.0})

    def __post_init__(self) -> None:
        self.names = self.index.tables.get("names")
        self.initials = InitialsIndex(self.names, self.index.tables.get("initials")) if self.names is not None else None
        self.use_aliases(self.index.tables.get("aliases"))

    def use_aliases(self, table: AliasTable | None) -> None:
        """Look mentions up in this alias table (the index's own by default)."""
        self.aliases = table
        self._totals = link_totals(table) if table is not None else None

    def training_links(self) -> LinkSketch | None:
        """The sketch of the training links its alias table was counted from (None: no such table)."""
        return self.aliases.link_sketch() if self.aliases is not None else None

    def gold_sketches(self) -> dict[str, LinkSketch]:
        """Sketches of the gold mentions its reranker's trees and calibration were fitted on."""
        return self.reranker.gold_sketches(f"{self.index.folder}: reranker")

    # -- the ranker protocol ---------------------------------------------------

    @property
    def encode_stage(self) -> Callable[[Prepared], Prepared] | None:
        """On CUDA the encoder is a pipeline stage of its own (tokenising, searching, features and
        writing then overlap the GPU); on CPU encoding and the rest share the cores, so none."""
        return self.encode if self.encoder.device == "cuda" else None

    def encode(self, prepared: Prepared) -> Prepared:
        """Both views' query vectors of a prepared chunk, kept in it for `rank`."""
        started = time.perf_counter()
        if prepared.string_ids is not None:
            prepared.string_q = self.encoder.encode_ids(prepared.string_ids)
        if prepared.context_ids is not None:
            prepared.context_q = self.encoder.encode_ids(prepared.context_ids)
        prepared.encoded = True
        self.seconds["encode"] += time.perf_counter() - started
        return prepared

    def prepare(self, spans: Sequence[MentionSpan]) -> Prepared:
        tokens = self.encoder.tokens
        spans = list(spans)
        found = antecedents(spans)
        strings = [spans[j].string if j >= 0 else span.string for span, j in zip(spans, found)]
        return Prepared(
            spans, strings, np.array(found, dtype=np.int64) >= 0, [loose_key(s) for s in strings],
            [acronym_key(s) for s in strings],
            tokens.strings(strings, role="mention") if self.string is not None else None,
            tokens.mentions(spans, role="mention") if self.context is not None else None)

    def rank(self, prepared: Prepared, k: int) -> Ranking:
        n = len(prepared.spans)
        out = Ranking.empty(n, k)
        views = np.zeros((n, k), dtype=np.uint8)
        features = np.zeros((n, k, len(FEATURES)), dtype=np.float32) if self.explain else None
        if n == 0:
            return Ranking(out.qids, out.scores, views, features, probabilities=True)
        rows = self.candidates(prepared)
        if len(rows.qid):
            langs = [s.lang or "" for s in prepared.spans]
            p = self.reranker.probabilities(rows.X, rows.mention, langs)
            order = np.lexsort((rows.qid, -p, rows.mention))
            mention = rows.mention[order]
            start = np.searchsorted(mention, np.arange(n))
            place = np.arange(len(order)) - start[mention]
            keep = place < k
            chosen = order[keep]
            out.qids[mention[keep], place[keep]] = rows.qid[chosen]
            out.scores[mention[keep], place[keep]] = p[chosen]
            views[mention[keep], place[keep]] = rows.found_by[chosen]
            if features is not None:
                features[mention[keep], place[keep]] = rows.X[chosen]
        return Ranking(out.qids, out.scores, views, features, probabilities=True)

    def in_kb(self, gold: np.ndarray) -> np.ndarray:
        found = np.zeros(len(gold), dtype=bool)
        for view in (self.string, self.context):
            if view is not None:
                found |= view.contains(gold)
        for table in self.index.tables.values():
            found |= table.contains(gold)
        return found

    def describe(self) -> dict:
        from mel.artifacts import sha256_file

        index = self.index
        manifest = index.folder / "manifest.json"
        return {
            "index": {"path": str(index.folder), "manifest_sha256": sha256_file(manifest),
                      "views": sorted(index.view_folders), "tables": sorted(index.tables),
                      "search": "exact" if any(v.exact for v in (self.string, self.context) if v) else "scann"},
            "model": {"checksum": self.encoder.checksum, "path": str(self.encoder.model.path),
                      "source": self.encoder.manifest.source, "precision": self.encoder.precision,
                      "device": self.encoder.device},
            "reranker": {"features": list(self.reranker.features), "trees": len(self.reranker.trees),
                         **{key: self.reranker.meta.get(key) for key in ("created", "gold", "fitted_on")}},
        }

    # -- candidates and features -------------------------------------------------

    def _encode_and_search(self, prepared: Prepared):
        if not prepared.encoded:
            self.encode(prepared)
        string_q, context_q = prepared.string_q, prepared.context_q
        started = time.perf_counter()
        string_r = self.string.search(string_q, self.view_k) if self.string is not None else None
        context_r = self.context.search(context_q, self.view_k) if self.context is not None else None
        self.seconds["search"] += time.perf_counter() - started
        return string_q, string_r, context_q, context_r

    def candidates(self, prepared: Prepared) -> CandidateRows:
        """Every candidate of every mention, with its features (X) and sources."""
        string_q, string_r, context_q, context_r = self._encode_and_search(prepared)
        started = time.perf_counter()
        n = len(prepared.spans)
        mention: list[int] = []
        qid: list[int] = []
        found_by: list[int] = []
        name_hits: list[dict[int, int]] = []
        alias_hits: list[dict[int, float]] = []
        alias_counts: list[dict[int, int]] = []
        acronym_of: list[frozenset[int]] = []  # per mention: the entities with a name of its initials
        for m in range(n):
            sources: dict[int, int] = {}
            for result, bit in ((string_r, VIEW_BITS["string"]), (context_r, VIEW_BITS["context"])):
                if result is not None:
                    for q in result.qids[m].tolist():
                        if q >= 0:
                            sources[q] = sources.get(q, 0) | bit
            names_q, names_c = table_hits(self.names, prepared.keys[m])
            name_hits.append(dict(zip(names_q, names_c)))
            for q in names_q:
                sources[q] = sources.get(q, 0) | VIEW_BITS["names"]
            initials, initials_hits = (self.initials.lookup(prepared.acronyms[m]) if self.initials is not None
                                       else (frozenset(), []))
            acronym_of.append(initials)
            for q in initials_hits:
                sources[q] = sources.get(q, 0) | VIEW_BITS["initials"]
            counts: dict[int, int] = {}
            if self.aliases is not None:
                aq, ac = table_hits(self.aliases, prepared.keys[m])
                if not aq and not names_q:
                    aq, ac = fuzzy_hits(self.aliases, prepared.keys[m])
                for q, c in zip(aq, ac):
                    counts[q] = counts.get(q, 0) + c
                    sources[q] = sources.get(q, 0) | VIEW_BITS["aliases"]
            total = sum(counts.values())
            alias_counts.append(counts)
            alias_hits.append({q: c / total for q, c in counts.items()} if total else {})
            for q, bits in sources.items():
                mention.append(m)
                qid.append(q)
                found_by.append(bits)
        if not qid:
            return CandidateRows.empty()
        rows = CandidateRows(np.array(mention, dtype=np.int64), np.array(qid, dtype=np.int64),
                             np.zeros((len(qid), len(FEATURES)), dtype=np.float32), np.array(found_by, np.uint8))
        X = rows.X
        best_entries = self._view_features(X, rows, n, string_q, string_r, "string", self.string)
        self._view_features(X, rows, n, context_q, context_r, "context", self.context)
        slices = mention_slices(rows.mention, n)  # each mention's rows
        pairs = list(zip(rows.mention.tolist(), rows.qid.tolist()))  # (mention, qid) of each row
        self._name_features(X, rows, prepared, name_hits, best_entries, slices, pairs)
        X[:, COLUMN["prior"]] = [alias_hits[m].get(q, 0.0) for m, q in pairs]
        X[:, COLUMN["prior_count"]] = [safe_log1p(alias_counts[m].get(q, 0)) for m, q in pairs]
        X[:, COLUMN["alias_found"]] = [q in alias_counts[m] for m, q in pairs]
        X[:, COLUMN["acronym"]] = [q in acronym_of[m] for m, q in pairs]
        X[:, COLUMN["prior_gap"]] = gap_to_best(X[:, COLUMN["prior"]], rows.mention, n)
        if self.aliases is not None and self._totals is not None:
            X[:, COLUMN["link_popularity"]] = popularity(self.aliases, self._totals, rows.qid)
            X[:, COLUMN["has_links"]] = 1.0
        X[:, COLUMN["log_qid"]] = log_qid(rows.qid)
        X[:, COLUMN["qid_gap"]] = qid_gap(X, rows.mention, n)
        shapes = np.array([mention_shape(s) for s in prepared.strings], dtype=np.float32)
        X[:, COLUMN["mention_length"]] = shapes[rows.mention, 0]
        X[:, COLUMN["mention_tokens"]] = shapes[rows.mention, 1]
        X[:, COLUMN["mention_upper"]] = shapes[rows.mention, 2]
        X[:, COLUMN["pronoun"]] = prepared.pronoun[rows.mention]
        if best_entries is not None and self.string is not None:
            vectors = np.zeros((len(rows.qid), self.string.dim), dtype=np.float32)
            known = best_entries >= 0
            if known.any():
                vectors[known] = self.string.vectors(best_entries[known])
            document_features(X, rows, prepared.keys, [s.doc for s in prepared.spans], vectors, slices)
        self.seconds["features"] += time.perf_counter() - started
        return rows

    def _view_features(self, X: np.ndarray, rows: CandidateRows, n: int, queries, result, view: str,
                       index: Index | None) -> np.ndarray | None:
        """The view's columns; returns each row's best entry in the view (-1: none)."""
        if index is None or result is None:
            X[:, COLUMN[f"{view}_rank"]] = self.view_k
            return None
        scores = view_scores(index, queries, result, rows.mention, rows.qid)
        X[:, COLUMN[f"{view}_score"]] = scores.score
        X[:, COLUMN[f"{view}_rank"]] = scores.rank
        X[:, COLUMN[f"{view}_gap"]] = gap_to_best(scores.score, rows.mention, n)
        X[:, COLUMN[f"{view}_found"]] = scores.found
        X[:, COLUMN[f"has_{view}"]] = 1.0
        return scores.entry

    def _name_features(self, X: np.ndarray, rows: CandidateRows, prepared: Prepared,
                       name_hits: list[dict[int, int]], entries: np.ndarray | None,
                       slices: list[np.ndarray], pairs: list[tuple[int, int]]) -> None:
        strings = prepared.strings
        langs = [s.lang for s in prepared.spans]
        if self.string is not None and entries is not None:
            known = np.flatnonzero(entries >= 0)
            labels = self.string.entry_labels(entries[known]) if len(known) else []
            entry_langs = self.string.entry_langs(entries[known]) if len(known) else []
            folded = [text.casefold() for text in strings]
            owners = rows.mention[known].tolist()
            X[known, COLUMN["exact"]] = [strings[m] == label for m, label in zip(owners, labels)]
            X[known, COLUMN["folded"]] = [folded[m] == label.casefold() for m, label in zip(owners, labels)]
            X[known, COLUMN["lang_match"]] = [langs[m] is not None and lang == langs[m]
                                              for m, lang in zip(owners, entry_langs)]
        X[:, COLUMN["loose"]] = [q in name_hits[m] for m, q in pairs]
        X[:, COLUMN["ambiguity"]] = [len(name_hits[m]) for m, _ in pairs]
        if self.names is None:
            return
        # RapidFuzz over each mention's candidates' names at once.
        cache: dict[int, list[str]] = {}
        for m, mine in enumerate(slices):
            if not len(mine):
                continue
            names, owner, counts = [], [], []
            for at, q in enumerate(rows.qid[mine].tolist()):
                found = cache.get(q)
                if found is None:
                    found = cache[q] = [self.names.alias(int(row)) for row in self.names.alias_rows_of_qid(q)]
                counts.append(len(found))
                names += found
                owner += [at] * len(found)
            X[mine, COLUMN["names"]] = counts
            if not names or not prepared.keys[m]:
                continue
            owner_array = np.array(owner)
            for scorer, column in ((fuzz.ratio, "name_ratio"), (fuzz.token_set_ratio, "name_token_set")):
                scores = process.cdist([prepared.keys[m]], names, scorer=scorer)[0] / 100
                best = np.zeros(len(mine), dtype=np.float32)
                np.maximum.at(best, owner_array, scores)
                X[mine, COLUMN[column]] = best


def open_linker(index: LinkerIndex, encoder: Encoder, reranker: Reranker, *, exact: bool = False,
                threads: int | None = None, explain: bool = False, verify: bool = True) -> FusedLinker:
    views = {view: Index(folder, exact=True if exact else None, threads=threads, verify=verify,
                         verify_folder=index.folder) for view, folder in index.view_folders.items()}
    return FusedLinker(index, encoder, reranker, views.get("string"), views.get("context"), explain=explain)
