"""`mel index tune`: fit the fused linker's reranker and calibration on gold documents.

1. Every gold mention goes through the linker's candidate stage (the index's views and
   tables, in the one streaming pipeline); each candidate row gets its features and a
   label (is it the gold entity).
2. Documents are split (a fixed 1 in 5 held out). On the rest, gradient-boosted trees
   (scikit-learn, `pip install 'mel[tune]'`) are fitted to the labels; the softmax
   temperature, the "none" logit and Platt scaling per language (languages with
   enough held-back mentions, else one for all) are fitted on out-of-fold predictions.
3. The held-out documents measure R@1 before (the index's current reranker) and after,
   and the calibration (expected calibration error and a reliability table).
4. The model is fitted again on every document and written into the index as
   reranker.json (plain JSON: feature list, trees, calibration, versions).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mel import __version__
from mel.artifacts import read_json, sha256_file, write_json
from mel.confidence import Reliability
from mel.damuel import is_damuel_part
from mel.errors import InputError
from mel.evaluation import (
    EvalDocument,
    EvalMention,
    SourceNotes,
    jsonl_documents,
    mewsli_documents,
    resolve_mewsli,
)
from mel.indexes.manifest import MANIFEST_FILE
from mel.kb import read_training_mentions
from mel.link_sketch import LinkOverlap, mention_fingerprint
from mel.linker.features import COLUMN, FEATURES, first_rows
from mel.linker.folder import RERANKER_FILE
from mel.linker.model import Calibration, Reranker, Tree, calibrated, softmax_probabilities
from mel.linker.ranker import FusedLinker
from mel.mentions import MentionSpan
from mel.pipeline import run_stream
from mel.qids import qid_to_int
from mel.skips import SkipReport
from mel.streams import display_name

HELD_OUT_EVERY = 5  # document i is held out when i % 5 == 4
MIN_PLATT_MENTIONS = 100
HARD_RANK = 5  # a negative this near the top of a view is a hard one
# Gold with this share of its mentions among the index's training links is refused: tuned on
# their own counts and contexts, the reranker collapses on new text (mel.link_sketch).
MAX_LINK_OVERLAP = 0.01


@dataclass
class TrainingRows:
    """Candidate rows of gold mentions: X, label y, and per mention its document, language and gold."""

    X: np.ndarray
    y: np.ndarray
    mention: np.ndarray  # row -> mention number
    qid: np.ndarray
    mention_doc: list[int] = field(default_factory=list)
    mention_lang: list[str] = field(default_factory=list)
    mention_gold: list[int] = field(default_factory=list)

    @property
    def mentions(self) -> int:
        return len(self.mention_doc)

    def subset(self, keep_mentions: np.ndarray) -> TrainingRows:
        """The rows of the mentions where keep_mentions is True, renumbered."""
        new_number = np.cumsum(keep_mentions) - 1
        rows = keep_mentions[self.mention]
        return TrainingRows(self.X[rows], self.y[rows], new_number[self.mention[rows]], self.qid[rows],
                            [d for d, k in zip(self.mention_doc, keep_mentions) if k],
                            [lang for lang, k in zip(self.mention_lang, keep_mentions) if k],
                            [g for g, k in zip(self.mention_gold, keep_mentions) if k])


def collect_rows(linker: FusedLinker, documents: Iterable[EvalDocument], *, doc_offset: int = 0,
                 chunk_size: int = 1024) -> TrainingRows:
    """Candidate rows of every linkable gold mention of `documents` (mentions whose text does not
    match are left out: there is nothing to link)."""
    parts: list[tuple] = []
    docs: list[int] = []
    langs: list[str] = []
    golds: list[int] = []
    counter = {"doc": doc_offset, "mention": 0}

    def prepare(group: list[EvalDocument]):
        spans, meta = [], []
        for document in group:
            number = counter["doc"]
            counter["doc"] += 1
            for m in document.mentions:
                if m.span is not None:
                    spans.append(dataclasses.replace(m.span, doc=number))
                    meta.append((number, m.lang, m.gold))
        return meta, linker.prepare(spans)

    def consume(group, ranked) -> bool:
        meta, rows = ranked
        base = counter["mention"]
        counter["mention"] += len(meta)
        for number, lang, gold in meta:
            docs.append(number)
            langs.append(lang)
            golds.append(gold)
        gold = np.array([g for _, _, g in meta], dtype=np.int64)
        y = (rows.qid == gold[rows.mention]).astype(np.int8) if len(rows.qid) else np.zeros(0, np.int8)
        parts.append((rows.X, y, rows.mention + base, rows.qid))
        return True

    run_stream(documents, units=lambda d: len(d.mentions), prepare=prepare,
               rank=lambda prepared: (prepared[0], linker.candidates(prepared[1])), consume=consume,
               chunk_size=chunk_size)
    if not parts or not docs:
        raise InputError("no linkable gold mentions to tune on")
    X, y, mention, qid = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return TrainingRows(X, y, mention, qid, docs, langs, golds)


def concatenate(rows: Sequence[TrainingRows]) -> TrainingRows:
    """Rows of several sets as one (mention numbers renumbered; document numbers kept)."""
    offsets = np.cumsum([0] + [r.mentions for r in rows])
    return TrainingRows(np.concatenate([r.X for r in rows]), np.concatenate([r.y for r in rows]),
                        np.concatenate([r.mention + off for r, off in zip(rows, offsets)]),
                        np.concatenate([r.qid for r in rows]),
                        [d for r in rows for d in r.mention_doc], [lang for r in rows for lang in r.mention_lang],
                        [g for r in rows for g in r.mention_gold])


# --- fitting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitSettings:
    trees: int = 200
    depth: int = 4
    learning_rate: float = 0.1
    l2: float = 1.0  # added to each leaf's hessian sum
    min_leaf: int = 20  # rows in a leaf, at least
    folds: int = 3
    seed: int = 0
    # The trees see every positive row and the hard negatives (near the top of a view, or
    # matching the mention's name or an alias), then a random share of the rest, at most this
    # many rows in all (the calibration, fitted on every row, absorbs the shift in the base rate).
    max_rows: int = 150_000


def _fit_trees(rows: TrainingRows, settings: FitSettings, weights: np.ndarray | None = None):
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        raise InputError("mel index tune needs scikit-learn: pip install 'mel[tune]'") from None
    if rows.y.sum() == 0 or rows.y.sum() == len(rows.y):
        raise InputError("the gold mentions give no positive (or no negative) candidate to learn from")
    # L2-regularised leaves: a Newton step on a leaf of rows already scored near 0 or 1 divides by
    # almost nothing (plain gradient boosting gave one leaf a value of 261, which put a random
    # entity above an exact full-name match on a new set); the penalty bounds every leaf.
    model = HistGradientBoostingClassifier(max_iter=settings.trees, max_depth=settings.depth, max_leaf_nodes=None,
                                           learning_rate=settings.learning_rate,
                                           l2_regularization=settings.l2, min_samples_leaf=settings.min_leaf,
                                           early_stopping=False, random_state=settings.seed)
    keep = _kept_rows(rows, settings)
    model.fit(rows.X[keep], rows.y[keep], sample_weight=None if weights is None else weights[rows.mention][keep])
    return model


def _kept_rows(rows: TrainingRows, settings: FitSettings) -> np.ndarray:
    """The rows the trees are fitted on (FitSettings.max_rows): a uniform sample would mostly drop
    the few negatives that decide hard cases (the exact label that a strong prior overrides)."""
    keep = np.ones(len(rows.y), dtype=bool)
    negatives = np.flatnonzero(rows.y == 0)
    room = settings.max_rows - int(rows.y.sum())
    if len(rows.y) <= settings.max_rows or room >= len(negatives):
        return keep
    X = rows.X[negatives]
    hard = ((X[:, COLUMN["string_rank"]] < HARD_RANK) | (X[:, COLUMN["context_rank"]] < HARD_RANK)
            | (X[:, COLUMN["loose"]] == 1) | (X[:, COLUMN["alias_found"]] == 1))
    rng = np.random.default_rng(settings.seed)
    first, rest = negatives[hard], negatives[~hard]
    if len(first) > room:
        first = rng.choice(first, size=max(room, 1), replace=False)
    chosen = np.concatenate([first, rng.choice(rest, size=min(len(rest), room - len(first)), replace=False)])
    keep[negatives] = False
    keep[chosen] = True
    return keep


def _export(model, meta: dict, calibration: Calibration) -> Reranker:
    """scikit-learn's histogram gradient boosting as mel's trees: x[feature] <= threshold goes left
    (features are never missing), leaf values already carry the learning rate."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        # Node numbers come as uint32: widen before -1 can mark a leaf (NumPy 2.5 refuses -1 in uint32).
        feature, left, right = (nodes[name].astype(np.int64) for name in ("feature_idx", "left", "right"))
        trees.append(Tree(np.where(leaf, -1, feature).astype(np.int32),
                          np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
                          np.where(leaf, -1, left).astype(np.int32), np.where(leaf, -1, right).astype(np.int32),
                          np.where(leaf, nodes["value"], 0.0).astype(np.float64)))
    init = float(np.asarray(model._baseline_prediction).ravel()[0])
    return Reranker(FEATURES, init, 1.0, tuple(trees), calibration, meta)


def _gold_index(rows: TrainingRows) -> np.ndarray:
    """Per mention, the row of its gold candidate, or -1 when the gold entity is not a candidate."""
    out = np.full(rows.mentions, -1, dtype=np.int64)
    positive = np.flatnonzero(rows.y == 1)
    out[rows.mention[positive]] = positive
    return out


def fit_softmax(logits: np.ndarray, rows: TrainingRows, weights: np.ndarray | None = None) -> tuple[float, float]:
    """Temperature and "none" logit that maximise the (mention-weighted) likelihood of the gold
    candidate, or of none."""
    gold = _gold_index(rows)
    weight = np.ones(rows.mentions) if weights is None else np.asarray(weights, dtype=np.float64)
    best, best_nll = (1.0, 0.0), math.inf
    for temperature in np.geomspace(0.25, 8, 25):
        for none_logit in np.linspace(-8, 8, 33):
            p = softmax_probabilities(logits, rows.mention, float(temperature), float(none_logit))
            total = np.zeros(rows.mentions)
            np.add.at(total, rows.mention, p)
            target = np.where(gold >= 0, p[gold.clip(0)], 1 - total)
            nll = -(weight * np.log(np.clip(target, 1e-12, 1))).sum()
            if nll < best_nll:
                best, best_nll = (float(temperature), float(none_logit)), nll
    return best


def _top(p: np.ndarray, rows: TrainingRows) -> tuple[np.ndarray, np.ndarray]:
    """Per mention: the top candidate's probability (0 without candidates) and whether it is the gold."""
    top_p = np.zeros(rows.mentions)
    correct = np.zeros(rows.mentions, dtype=bool)
    if len(p):
        chosen = first_rows(rows.mention, rows.mentions, rows.qid, -p)  # highest p, then lowest QID
        chosen = chosen[chosen >= 0]
        top_p[rows.mention[chosen]] = p[chosen]
        correct[rows.mention[chosen]] = rows.y[chosen] == 1
    return top_p, correct


def fit_platt(p_top: np.ndarray, correct: np.ndarray, langs: Sequence[str], weights: np.ndarray | None = None,
              per_language: bool = True) -> dict[str, tuple[float, float]]:
    """Platt scaling sigmoid(a * logit(p) + c) of top-1 probabilities (mention-weighted), for all
    languages ("*") and, with `per_language`, for each language with enough mentions."""
    from sklearn.linear_model import LogisticRegression

    weight = np.ones(len(p_top)) if weights is None else np.asarray(weights, dtype=np.float64)

    def fit(mask: np.ndarray) -> tuple[float, float]:
        if mask.sum() < 20 or correct[mask].all() or not correct[mask].any():
            return (1.0, 0.0)
        clipped = np.clip(p_top[mask], 1e-6, 1 - 1e-6)
        x = np.log(clipped / (1 - clipped))[:, None]
        model = LogisticRegression(C=100.0).fit(x, correct[mask], sample_weight=weight[mask])
        a, c = float(model.coef_[0, 0]), float(model.intercept_[0])
        return (a, c) if a > 0 else (1.0, 0.0)

    langs_array = np.array(langs)
    out = {"*": fit(np.ones(len(langs_array), dtype=bool))}
    for lang in sorted(set(langs)) if per_language else ():
        mask = langs_array == lang
        if mask.sum() >= MIN_PLATT_MENTIONS:
            out[lang] = fit(mask)
    return out


def fit_reranker(rows: TrainingRows, settings: FitSettings = FitSettings(), meta: dict | None = None,
                 groups: Sequence[int] | None = None, weights: Sequence[float] | None = None,
                 per_language: bool = True) -> Reranker:
    """Trees on every row; calibration on out-of-fold predictions (folds by document, or by
    `groups`, one number per mention: mentions of one group share a fold, as copies of one
    document must, or the held-out predictions would have seen their twins). `weights`, one per
    mention, weigh the trees' rows and the calibration (so that a large set does not drown the
    others). `per_language` False fits one Platt scaling for every language: right when each
    language comes from other sources, where a per-language fit learns the source, not the language."""
    mention_weights = None if weights is None else np.asarray(weights, dtype=np.float64)
    folds = np.array(rows.mention_doc if groups is None else groups) % settings.folds
    oof = np.zeros(len(rows.y))
    for fold in range(settings.folds):
        held = folds == fold
        if held.all() or not held.any():
            continue
        model = _fit_trees(rows.subset(~held), settings,
                           None if mention_weights is None else mention_weights[~held])
        part = held[rows.mention]
        oof[part] = model.decision_function(rows.X[part])
    temperature, none_logit = fit_softmax(oof, rows, mention_weights)
    p = softmax_probabilities(oof, rows.mention, temperature, none_logit)
    p_top, correct = _top(p, rows)
    calibration = Calibration(temperature, none_logit,
                              fit_platt(p_top, correct, rows.mention_lang, mention_weights, per_language))
    meta = {"mel_version": __version__, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "settings": settings.__dict__, "mentions": rows.mentions, "rows": int(len(rows.y)), **(meta or {})}
    return _export(_fit_trees(rows, settings, mention_weights), meta, calibration)


# --- measuring -----------------------------------------------------------------------------


def reliability(p_top: np.ndarray, correct: np.ndarray) -> dict:
    """Expected calibration error and the reliability table of top-1 probabilities (mel eval's)."""
    table = Reliability()
    table.add(p_top, correct)
    return table.to_json()


def measure(reranker: Reranker, rows: TrainingRows) -> dict:
    """R@1 and calibration of `reranker` on the rows' mentions."""
    p = calibrated(reranker.logits(rows.X), rows.mention, rows.mention_lang, reranker.calibration) \
        if len(rows.y) else np.zeros(0)
    p_top, correct = _top(p, rows)
    return {"mentions": rows.mentions, "R@1": round(float(correct.mean()) if rows.mentions else 0.0, 4),
            "gold_among_candidates": round(float((_gold_index(rows) >= 0).mean()), 4),
            "calibration": reliability(p_top, correct)}


def split(rows: TrainingRows) -> tuple[TrainingRows, TrainingRows]:
    """(training, held-out): every fifth document held out."""
    held = np.array([d % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for d in rows.mention_doc])
    if held.all() or not held.any():
        raise InputError("tuning needs gold mentions in at least five documents (one in five is held out)")
    return rows.subset(~held), rows.subset(held)


# --- `mel index tune` ----------------------------------------------------------------------


def gold_documents(path: str, report: SkipReport) -> list[EvalDocument]:
    """Gold documents from mel documents JSON Lines, a Mewsli-9 folder, or DaMuEL links (a part's pages)."""
    folder = Path(path)
    notes = SourceNotes()
    if folder.is_dir() and (is_damuel_part(folder) or any(is_damuel_part(p) for p in folder.iterdir())):
        return _damuel_documents(path, report)
    if folder.is_dir():
        root, langs = resolve_mewsli(folder, None)
        return list(mewsli_documents(root, langs, report=report, notes=notes))
    return list(jsonl_documents(path, None, report=report, notes=notes))


def _damuel_documents(path: str, report: SkipReport) -> list[EvalDocument]:
    """A page's wiki-origin links as one gold document."""
    out: list[EvalDocument] = []
    page: list[EvalMention] = []
    current = None
    for mention in read_training_mentions([path], report=report):
        if mention.source != current and page:
            out.append(EvalDocument(tuple(page)))
            page = []
        current = mention.source
        page.append(EvalMention(lang=mention.lang or "und", gold=qid_to_int(mention.qid),
                                span=MentionSpan(mention.text, mention.start, mention.end, mention.lang),
                                location=mention.source))
    if page:
        out.append(EvalDocument(tuple(page)))
    return out


def tune_index(index: str | Path, gold: Sequence[str], linker: FusedLinker, *,
               settings: FitSettings = FitSettings(), report: SkipReport | None = None) -> dict:
    """Fit the reranker and calibration of `index` on `gold`, write them into it, and say how it went."""
    report = report if report is not None else SkipReport()
    sets = [(path, gold_documents(path, report)) for path in gold]
    sketch = linker.aliases.link_sketch() if linker.aliases is not None else None
    in_links: list[LinkOverlap] = []
    for path, documents in sets:
        if not any(m.span is not None for document in documents for m in document.mentions):
            raise InputError(f"{display_name(path)}: no linkable gold mentions to tune on{report.why()}")
        if sketch is None:
            continue
        overlap = sketch.overlap(gold_fingerprints(documents))
        in_links.append(overlap)
        if overlap.share >= MAX_LINK_OVERLAP:
            raise InputError(
                f"{display_name(path)}: {100 * overlap.share:.0f}% of its gold mentions ({overlap.found:,} of "
                f"{overlap.checked:,} checked) are training links of {index} (its --links): their own alias counts "
                "and contexts would teach the reranker to trust what new text never has; tune on gold documents "
                "the index was not built from (hold them out of --links)")
    offset, parts = 0, []
    for _, documents in sets:
        parts.append(collect_rows(linker, documents, doc_offset=offset))
        offset += len(documents)
    rows = concatenate(parts)
    train, held = split(rows)
    before = measure(linker.reranker, held)
    after = measure(fit_reranker(train, settings), held)
    final = fit_reranker(rows, settings, meta={"gold": [str(p) for p in gold],
                                               "held_out": {"before": before, "after": after}})
    write_reranker(Path(index), final)
    return {"index": str(index), "gold": [str(p) for p in gold], "documents": offset, "mentions": rows.mentions,
            "candidates": int(len(rows.y)), "held_out": {"before": before, "after": after},
            "in_training_links": None if sketch is None else {
                "checked": sum(o.checked for o in in_links), "found": sum(o.found for o in in_links)},
            "skipped": report.to_json()}


def gold_fingerprints(documents: Sequence[EvalDocument]) -> np.ndarray:
    """The link fingerprints (mel.link_sketch) of the documents' linkable gold mentions, to compare
    with the training links of the index's alias table."""
    return np.array([mention_fingerprint(m.span.text, m.span.start, m.span.end, m.gold)
                     for document in documents for m in document.mentions if m.span is not None], dtype=np.uint64)


def write_reranker(index: Path, reranker: Reranker) -> None:
    """reranker.json into the index, and its checksum into the manifest (both written atomically)."""
    path = index / RERANKER_FILE
    write_json(path, reranker.to_json())
    manifest_path = index / MANIFEST_FILE
    data = read_json(manifest_path)
    data["reranker"] = {"sha256": sha256_file(path), "created": reranker.meta.get("created"),
                        "gold": reranker.meta.get("gold"), "mentions": reranker.meta.get("mentions"),
                        "held_out": reranker.meta.get("held_out")}
    write_json(manifest_path, data)
