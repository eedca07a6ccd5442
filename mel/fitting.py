"""Fitting the fused linker's reranker to candidate rows of gold mentions (scikit-learn at fit
time only: `pip install 'mel[tune]'`), and measuring one on such rows.

- `fit_reranker`: gradient-boosted trees on every row, the softmax temperature, the "none"
  logit and Platt scaling per language fitted on out-of-fold predictions.
- `recalibrate`: a reranker's trees kept, only its calibration fitted, shrunk towards the
  current one (a few dozen gold mentions are enough to calibrate, not to grow trees).
- `measure`: R@1 and the calibration of a reranker on rows it was not fitted on.

`mel index tune` (mel.tuning) collects the rows and chooses; bench/ fits the shipped default.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mel import __version__
from mel.artifacts import tool_versions
from mel.confidence import Reliability
from mel.errors import InputError
from mel.linker.features import COLUMN, FEATURES, first_rows
from mel.linker.model import Calibration, Reranker, Tree, calibrated, platt_capped, softmax_probabilities

MIN_PLATT_MENTIONS = 100
HARD_RANK = 5  # a negative this near the top of a view is a hard one
# A recalibration treats the current calibration as this many gold mentions of evidence, so a few
# dozen mentions move it only part of the way (bench/bench_own_links.py: fitted on OKE-2015's 62
# tuning mentions alone, the test fifth's ECE went from 0.092 to 0.194; with this prior, to 0.086,
# where a calibrated linker would show 0.090 on its 59 mentions).
PRIOR_MENTIONS = 50.0
PLATT_SLOPES, PLATT_INTERCEPT = (0.1, 10.0), 10.0  # the range a refit to stated probabilities keeps to


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


def _needs_tune_extra() -> None:
    """One clear line, not a traceback, where the fitting libraries are missing."""
    import importlib.util

    for module in ("sklearn", "scipy"):
        if importlib.util.find_spec(module) is None:
            raise InputError("mel index tune needs scikit-learn and SciPy: pip install 'mel[tune]'")


def _fit_trees(rows: TrainingRows, settings: FitSettings, weights: np.ndarray | None = None):
    _needs_tune_extra()
    from sklearn.ensemble import HistGradientBoostingClassifier

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


def fit_softmax(logits: np.ndarray, rows: TrainingRows, weights: np.ndarray | None = None,
                prior: np.ndarray | None = None, prior_mentions: float = 0.0) -> tuple[float, float]:
    """Temperature and "none" logit that maximise the (mention-weighted) likelihood of the gold
    candidate, or of none. With `prior` (a probability per row, as the current calibration gives)
    the targets are shrunk towards it, as if it were `prior_mentions` mentions of evidence."""
    gold = _gold_index(rows)
    weight = np.ones(rows.mentions) if weights is None else np.asarray(weights, dtype=np.float64)
    share = _prior_share(prior_mentions, weight.sum()) if prior is not None else 0.0
    row_target = rows.y.astype(np.float64)
    none_target = (gold < 0).astype(np.float64)
    if prior is not None and share:
        prior_total = np.zeros(rows.mentions)
        np.add.at(prior_total, rows.mention, prior)
        row_target = (1 - share) * row_target + share * prior
        none_target = (1 - share) * none_target + share * np.clip(1 - prior_total, 0, 1)
    row_weight = weight[rows.mention] * row_target
    best, best_nll = (1.0, 0.0), math.inf
    for temperature in np.geomspace(0.25, 8, 25):
        for none_logit in np.linspace(-8, 8, 33):
            p = softmax_probabilities(logits, rows.mention, float(temperature), float(none_logit))
            total = np.zeros(rows.mentions)
            np.add.at(total, rows.mention, p)
            nll = -(row_weight * np.log(np.clip(p, 1e-12, 1))).sum() \
                - (weight * none_target * np.log(np.clip(1 - total, 1e-12, 1))).sum()
            if nll < best_nll:
                best, best_nll = (float(temperature), float(none_logit)), nll
    return best


def _prior_share(prior_mentions: float, evidence: float) -> float:
    """How much a prior worth `prior_mentions` mentions weighs against `evidence` mentions."""
    return prior_mentions / (prior_mentions + evidence) if prior_mentions > 0 else 0.0


def _top_rows(p: np.ndarray, rows: TrainingRows) -> np.ndarray:
    """Per mention, the row of its top candidate (highest p, then lowest QID), -1 without candidates."""
    return first_rows(rows.mention, rows.mentions, rows.qid, -p) if len(p) else np.full(rows.mentions, -1)


def _top(p: np.ndarray, rows: TrainingRows, top_row: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per mention: the top candidate's probability (0 without candidates) and whether it is the
    gold (`top_row`: _top_rows(p, rows), when already known)."""
    top_p = np.zeros(rows.mentions)
    correct = np.zeros(rows.mentions, dtype=bool)
    chosen = _top_rows(p, rows) if top_row is None else top_row
    chosen = chosen[chosen >= 0]
    top_p[rows.mention[chosen]] = p[chosen]
    correct[rows.mention[chosen]] = rows.y[chosen] == 1
    return top_p, correct


def _soft_target(correct: np.ndarray, weight: np.ndarray, prior: np.ndarray | None,
                 prior_mentions: float) -> np.ndarray:
    """Per mention, whether the top candidate is right, shrunk towards `prior` (the probability
    the current calibration states for it) as if that were `prior_mentions` mentions."""
    if prior is None:
        return correct.astype(np.float64)
    share = _prior_share(prior_mentions, weight.sum())
    return (1 - share) * correct + share * prior


def fit_platt(p_top: np.ndarray, correct: np.ndarray, langs: Sequence[str], weights: np.ndarray | None = None,
              per_language: bool = True, prior: np.ndarray | None = None,
              prior_mentions: float = 0.0) -> dict[str, tuple[float, float]]:
    """Platt scaling sigmoid(a * logit(p) + c) of top-1 probabilities (mention-weighted), for all
    languages ("*") and, with `per_language`, for each language with enough mentions. With `prior`
    (per mention, the probability the current calibration gives the same top candidate) each
    fit's labels are shrunk towards it, as if it were `prior_mentions` mentions of evidence."""
    _needs_tune_extra()
    from sklearn.linear_model import LogisticRegression

    weight = np.ones(len(p_top)) if weights is None else np.asarray(weights, dtype=np.float64)

    def fit(mask: np.ndarray) -> tuple[float, float]:
        target = _soft_target(correct[mask], weight[mask], None if prior is None else prior[mask], prior_mentions)
        if not _platt_fittable(target):
            return (1.0, 0.0)
        clipped = np.clip(p_top[mask], 1e-6, 1 - 1e-6)
        x = np.log(clipped / (1 - clipped))[:, None]
        # Soft labels as two weighted rows each: label 1 with weight target, label 0 with the rest.
        model = LogisticRegression(C=100.0).fit(
            np.concatenate([x, x]), np.concatenate([np.ones(len(x)), np.zeros(len(x))]),
            sample_weight=np.concatenate([weight[mask] * target, weight[mask] * (1 - target)]))
        a, c = float(model.coef_[0, 0]), float(model.intercept_[0])
        return (a, c) if a > 0 else (1.0, 0.0)

    langs_array = np.array(langs)
    out = {"*": fit(np.ones(len(langs_array), dtype=bool))}
    for lang in sorted(set(langs)) if per_language else ():
        mask = langs_array == lang
        if mask.sum() >= MIN_PLATT_MENTIONS:
            out[lang] = fit(mask)
    return out


def fit_calibration(logits: np.ndarray, rows: TrainingRows, weights: np.ndarray | None = None,
                    per_language: bool = True, prior: np.ndarray | None = None,
                    prior_mentions: float = 0.0, as_stated: bool = True) -> Calibration:
    """The softmax temperature and "none" logit, then Platt scaling of the top candidate's
    probability, for logits the trees were not fitted on; with `prior` (per row, the current
    calibration's probabilities) shrunk towards it as if it were `prior_mentions` mentions.
    `as_stated` fits the Platt scaling to the probability as linking states it (_platt_as_linked);
    False leaves it fitted to the top candidate alone, as the shipped default's is (fitted on
    other domains than it links, that measured better across them: docs/experiments.md)."""
    temperature, none_logit = fit_softmax(logits, rows, weights, prior, prior_mentions)
    p = softmax_probabilities(logits, rows.mention, temperature, none_logit)
    top_row = _top_rows(p, rows)
    p_top, correct = _top(p, rows, top_row)
    # Candidate order is the same under any calibration, so the prior's top is the same candidate.
    prior_top = _top(prior, rows, top_row)[0] if prior is not None else None
    platt = fit_platt(p_top, correct, rows.mention_lang, weights, per_language, prior_top, prior_mentions)
    if as_stated:
        platt = _platt_as_linked(platt, p, rows, top_row, correct, weights, prior_top, prior_mentions)
    return Calibration(temperature, none_logit, platt)


def _platt_as_linked(platt: dict[str, tuple[float, float]], p: np.ndarray, rows: TrainingRows,
                     top_row: np.ndarray, correct: np.ndarray, weights: np.ndarray | None,
                     prior_top: np.ndarray | None, prior_mentions: float) -> dict[str, tuple[float, float]]:
    """Platt scaling refitted to the probabilities mel states at link time, where it differs.

    fit_platt maps the top candidate's probability alone, but linking maps every candidate and
    scales a mention's back when they pass 1 in all (mel.linker.model.platt_capped). A slope
    under 1 lifts many weak candidates, and that scaling then pulls the top one far below the
    fitted value (0.48 stated for 0.81 right, on 181 OKE-2016 mentions); there the slope and
    intercept are fitted again, to the stated top probability itself."""
    if not len(p):
        return platt
    weight = np.ones(rows.mentions) if weights is None else np.asarray(weights, dtype=np.float64)
    langs = np.array(rows.mention_lang)
    out = dict(platt)
    for key, (a, c) in platt.items():
        chosen = (np.ones(rows.mentions, dtype=bool) if key == "*" else langs == key) & (top_row >= 0)
        if not chosen.any():
            continue
        keep_rows = chosen[rows.mention]
        target = _soft_target(correct[chosen], weight[chosen], None if prior_top is None else prior_top[chosen],
                              prior_mentions)
        if not _platt_fittable(target):
            continue
        refitted = _refit_capped(p[keep_rows], (np.cumsum(chosen) - 1)[rows.mention[keep_rows]],
                                 np.flatnonzero(keep_rows).searchsorted(top_row[chosen]), target, weight[chosen],
                                 (a, c))
        if refitted is not None:
            out[key] = refitted
    return out


def _platt_fittable(target: np.ndarray) -> bool:
    """Enough mentions, and both outcomes among them (else Platt scaling stays the identity)."""
    return len(target) >= 20 and target.min() < 1 and target.max() > 0


def _refit_capped(p: np.ndarray, mention: np.ndarray, top: np.ndarray, target: np.ndarray, weight: np.ndarray,
                  start: tuple[float, float]) -> tuple[float, float] | None:
    """(a, c) that fit `target` (per mention) with the top rows' capped Platt probabilities, or
    None when capping leaves the `start` fit as it is."""
    _needs_tune_extra()
    from scipy.optimize import minimize

    def stated(theta: np.ndarray) -> np.ndarray:
        return platt_capped(p, mention, math.exp(theta[0]), theta[1])[top]

    theta = np.array([math.log(start[0]), start[1]])
    alone = platt_capped(p[top], np.arange(len(top)), *start)  # each top candidate on its own
    if np.max(np.abs(stated(theta) - alone)) < 1e-3:
        return None

    def loss(theta: np.ndarray) -> float:
        q = np.clip(stated(theta), 1e-9, 1 - 1e-9)
        return float(-(weight * (target * np.log(q) + (1 - target) * np.log(1 - q))).sum())

    # Bounded: on a few dozen mentions an unbounded fit can run off to a slope that states 1 for
    # every candidate (ties where the trees had an order).
    bounds = [(math.log(PLATT_SLOPES[0]), math.log(PLATT_SLOPES[1])), (-PLATT_INTERCEPT, PLATT_INTERCEPT)]
    theta = np.clip(theta, [low for low, _ in bounds], [high for _, high in bounds])
    found = minimize(loss, theta, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7}, bounds=bounds)
    return float(math.exp(found.x[0])), float(found.x[1])


def fit_reranker(rows: TrainingRows, settings: FitSettings = FitSettings(), meta: dict | None = None,
                 groups: Sequence[int] | None = None, weights: Sequence[float] | None = None,
                 per_language: bool = True, as_stated: bool = True) -> Reranker:
    """Trees on every row; calibration on out-of-fold predictions (folds by document, or by
    `groups`, one number per mention: mentions of one group share a fold, as copies of one
    document must, or the held-out predictions would have seen their twins). `weights`, one per
    mention, weigh the trees' rows and the calibration (so that a large set does not drown the
    others). `per_language` False fits one Platt scaling for every language: right when each
    language comes from other sources, where a per-language fit learns the source, not the language.
    `as_stated`: see fit_calibration."""
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
    calibration = fit_calibration(oof, rows, mention_weights, per_language, as_stated=as_stated)
    meta = {**_fit_meta(rows), "refit": "trees", "settings": settings.__dict__, **(meta or {})}
    return _export(_fit_trees(rows, settings, mention_weights), meta, calibration)


def _fit_meta(rows: TrainingRows) -> dict:
    return {"mel_version": __version__, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "tool_versions": tool_versions(), "mentions": rows.mentions, "rows": int(len(rows.y))}


def recalibrate(reranker: Reranker, rows: TrainingRows, meta: dict | None = None, per_language: bool = True,
                prior_mentions: float = PRIOR_MENTIONS) -> Reranker:
    """`reranker`'s trees with a calibration (temperature, "none" logit, Platt per language) fitted
    on the rows' mentions, shrunk towards its current one as if that were `prior_mentions` mentions
    of evidence. The trees were not fitted on these mentions, so their logits serve as they are
    (no out-of-fold predictions needed)."""
    logits = reranker.logits(rows.X)
    current = calibrated(logits, rows.mention, rows.mention_lang, reranker.calibration)
    calibration = fit_calibration(logits, rows, None, per_language, prior=current, prior_mentions=prior_mentions)
    source = reranker.trees_meta()  # recalibrated before: the trees still come from that fit
    kept = ("created", "tool_versions", "gold", "fitted_on", "gold_sketch")
    trees_from = {key: source[key] for key in kept if key in source}
    meta = {**_fit_meta(rows), "refit": "calibration", "trees_from": trees_from or "unknown", **(meta or {})}
    return dataclasses.replace(reranker, calibration=calibration, meta=meta)


# --- measuring -----------------------------------------------------------------------------


def reliability(p_top: np.ndarray, correct: np.ndarray) -> dict:
    """Expected calibration error and the reliability table of top-1 probabilities (mel eval's)."""
    table = Reliability()
    table.add(p_top, correct)
    return table.to_json()


def stated_top(reranker: Reranker, rows: TrainingRows) -> tuple[np.ndarray, np.ndarray]:
    """Per mention: the probability `reranker` states for its top candidate, and whether that is the gold."""
    p = reranker.probabilities(rows.X, rows.mention, rows.mention_lang) if len(rows.y) else np.zeros(0)
    return _top(p, rows)


def measure(reranker: Reranker, rows: TrainingRows,
            top: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """R@1 and calibration of `reranker` on the rows' mentions (`top`: stated_top(reranker, rows),
    when already known)."""
    p_top, correct = stated_top(reranker, rows) if top is None else top
    return {"mentions": rows.mentions, "R@1": round(float(correct.mean()) if rows.mentions else 0.0, 4),
            "gold_among_candidates": round(float((_gold_index(rows) >= 0).mean()), 4),
            "calibration": reliability(p_top, correct)}

