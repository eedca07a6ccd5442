"""Fitting the reranker: trees exported from scikit-learn, the softmax and Platt calibrations,
mention weights, and recalibrating a reranker's trees on new gold."""

from __future__ import annotations

import numpy as np
import pytest

from mel.fitting import (
    FitSettings,
    TrainingRows,
    _export,
    _fit_trees,
    _top,
    concatenate,
    fit_platt,
    fit_reranker,
    fit_softmax,
    measure,
    recalibrate,
)
from mel.linker.features import FEATURES
from mel.linker.model import Calibration, Reranker
from tests.mel.synthetic_rows import synthetic_rows

pytest.importorskip("sklearn")


def test_the_exported_trees_give_scikit_learns_logits():
    rows = synthetic_rows(400, seed=1)
    model = _fit_trees(rows, FitSettings(trees=30, max_rows=10**9))
    exported = _export(model, {}, Calibration())
    assert np.allclose(exported.logits(rows.X), model.decision_function(rows.X), atol=1e-9)
    assert len(exported.trees) == 30 and exported.learning_rate == 1.0


def test_no_leaf_runs_away_on_rows_scored_near_certain():
    """A few positives among rows the trees already score near 0: unregularised Newton steps
    give such leaves huge values; the L2 penalty keeps every tree's say bounded."""
    rows = synthetic_rows(600, seed=12)
    score = rows.X[:, FEATURES.index("string_score")]
    score *= 20  # near-certain scores
    flip = np.flatnonzero((rows.y == 0) & (score < np.percentile(score, 10)))[:5]
    rows.y[flip] = 1
    reranker = fit_reranker(rows, FitSettings(trees=60))
    # Each tree adds at most its leaf value (the learning rate is in it): 0.30 here, where plain
    # gradient boosting (scikit-learn's GradientBoostingClassifier) adds up to 1.72 in one tree.
    assert max(float(np.abs(tree.value).max()) for tree in reranker.trees) < 0.5


def test_the_softmax_calibration_recovers_known_probabilities():
    rows = synthetic_rows(3000, seed=3, temperature=2.0, none_logit=-1.0)
    score = rows.X[:, FEATURES.index("string_score")].astype(np.float64)
    temperature, none_logit = fit_softmax(score, rows)
    assert temperature == pytest.approx(2.0, rel=0.2) and none_logit == pytest.approx(-1.0, abs=0.6)


def test_a_fitted_reranker_is_calibrated_on_new_data():
    reranker = fit_reranker(synthetic_rows(3000, seed=4), FitSettings(trees=60))
    fresh = synthetic_rows(3000, seed=5)
    measured = measure(reranker, fresh)
    assert measured["calibration"]["ece"] <= 0.05, measured["calibration"]
    # The model learnt the signal: its R@1 is close to the best possible (always the top score).
    best = measure(Reranker(FEATURES, 0.0, 1.0, ()), fresh)
    assert measured["R@1"] >= 0.9 * _oracle_r1(fresh) and best["mentions"] == fresh.mentions


def _oracle_r1(rows: TrainingRows) -> float:
    score = rows.X[:, FEATURES.index("string_score")]
    hits = 0
    for m in range(rows.mentions):
        mine = np.flatnonzero(rows.mention == m)
        hits += int(rows.y[mine[np.argmax(score[mine])]])
    return hits / rows.mentions


def test_mention_weights_let_a_small_set_outweigh_a_large_one():
    small, large = synthetic_rows(300, seed=8), synthetic_rows(3000, seed=9)
    large.X[:, FEATURES.index("string_score")] *= -1  # the large set says the opposite
    both = concatenate([small, large])
    settings = FitSettings(trees=40)
    plain = fit_reranker(both, settings)
    weighted = fit_reranker(both, settings, weights=[1.0] * small.mentions + [0.01] * large.mentions)
    fresh = synthetic_rows(1000, seed=10)
    assert measure(weighted, fresh)["R@1"] >= 0.9 * _oracle_r1(fresh)
    assert measure(plain, fresh)["R@1"] < 0.5 * _oracle_r1(fresh)


def test_platt_scaling_per_language_or_one_for_all_and_weighted():
    rng = np.random.default_rng(11)
    n = 400
    p_top = rng.uniform(0.05, 0.95, size=2 * n)
    # "de" is right as often as p says; "en" far less often.
    correct = np.concatenate([rng.uniform(size=n) < p_top[:n], rng.uniform(size=n) < 0.3 * p_top[n:]])
    langs = ["de"] * n + ["en"] * n
    per = fit_platt(p_top, correct, langs)
    assert set(per) == {"*", "de", "en"} and per["en"][1] < per["de"][1] - 1
    one = fit_platt(p_top, correct, langs, per_language=False)
    assert set(one) == {"*"} and one["*"] == per["*"]
    # Weighing "de" up pulls the shared scaling to de's (near the identity: a ≈ 1, c ≈ 0).
    weighted = fit_platt(p_top, correct, langs, np.array([1.0] * n + [0.01] * n), per_language=False)
    assert abs(weighted["*"][1] - per["de"][1]) < abs(one["*"][1] - per["de"][1])


def test_recalibrating_keeps_the_trees_and_fits_the_probabilities_of_new_data():
    # Trees fitted where scores meant one thing; on the new data the gold follows softmax(score / 4)
    # with a likely "none": the same ranking, other probabilities.
    reranker = fit_reranker(synthetic_rows(2000, seed=13, temperature=1.0, none_logit=-3.0), FitSettings(trees=40))
    shifted = synthetic_rows(2000, seed=14, temperature=4.0, none_logit=1.0)
    fresh = synthetic_rows(2000, seed=15, temperature=4.0, none_logit=1.0)
    again = recalibrate(reranker, shifted, meta={"gold": ["new.jsonl"]})
    assert again.trees == reranker.trees and again.init == reranker.init
    assert np.array_equal(again.logits(fresh.X), reranker.logits(fresh.X))
    assert again.calibration != reranker.calibration
    assert again.meta["refit"] == "calibration" and again.meta["gold"] == ["new.jsonl"]
    assert again.meta["trees_from"]["created"] == reranker.meta["created"]
    before, after = measure(reranker, fresh), measure(again, fresh)
    assert after["R@1"] == before["R@1"]  # the same top candidates
    assert after["calibration"]["ece"] <= 0.05 < before["calibration"]["ece"], (before, after)


def test_a_recalibration_on_few_mentions_stays_near_the_current_calibration():
    reranker = fit_reranker(synthetic_rows(2000, seed=18, temperature=1.0, none_logit=-3.0), FitSettings(trees=30))
    few, many = (synthetic_rows(n, seed=19, temperature=4.0, none_logit=1.0) for n in (30, 3000))
    fresh = synthetic_rows(2000, seed=20, temperature=4.0, none_logit=1.0)

    def mean_top(r: Reranker) -> float:
        p = r.probabilities(fresh.X, fresh.mention, fresh.mention_lang)
        return float(np.mean(_top(p, fresh)[0]))

    current = mean_top(reranker)
    alone, shrunk = (mean_top(recalibrate(reranker, few, prior_mentions=prior)) for prior in (0, 50))
    assert abs(shrunk - current) < abs(alone - current)  # pulled back towards the current one
    assert min(current, alone) < shrunk < max(current, alone)
    # With thousands of mentions the prior hardly matters.
    plain, prior = (recalibrate(reranker, many, prior_mentions=p) for p in (0, 50))
    assert abs(mean_top(plain) - mean_top(prior)) < 0.01
    assert measure(prior, fresh)["calibration"]["ece"] <= 0.05


def strong_and_weak(strong: np.ndarray, correct: np.ndarray, weak: int = 40) -> tuple[np.ndarray, TrainingRows]:
    """Per mention one strong candidate (probability `strong`, the gold where `correct`) and
    `weak` weak ones sharing 90% of the rest: the probabilities and the rows."""
    n = len(strong)
    p = np.column_stack([strong, np.repeat(((1 - strong) * 0.9 / weak)[:, None], weak, axis=1)]).ravel()
    y = np.zeros(len(p), dtype=np.int8)
    y[np.arange(n)[correct] * (weak + 1)] = 1
    return p, TrainingRows(np.zeros((len(p), len(FEATURES)), np.float32), y, np.repeat(np.arange(n), weak + 1),
                           np.tile(np.arange(1, weak + 2), n), list(range(n)), ["xx"] * n, [0] * n)


def test_platt_scaling_is_refitted_to_the_probabilities_stated_after_capping():
    from mel.fitting import _platt_as_linked, fit_platt
    from mel.linker.model import platt_capped

    # One strong candidate and 40 weak ones per mention; the strong one's probability says less
    # than it should (right 60 to 90% of the time for 30 to 90%), so Platt flattens and lifts
    # every candidate, and the weak ones pass 1 in all.
    rng = np.random.default_rng(21)
    n, weak = 600, 40
    strong = rng.uniform(0.3, 0.9, size=n)
    correct = rng.uniform(size=n) < 0.6 + 0.5 * (strong - 0.3)
    p, rows = strong_and_weak(strong, correct, weak)
    platt = fit_platt(strong, correct, rows.mention_lang, per_language=False)
    assert platt["*"][0] < 1
    top = np.arange(n) * (weak + 1)

    def stated(ac):
        return platt_capped(p, rows.mention, *ac)[top]

    assert abs(stated(platt["*"]).mean() - correct.mean()) > 0.1  # capped, the top-1 fit is far off
    refitted = _platt_as_linked(platt, p, rows, top, correct, None, None, 0.0)
    assert abs(stated(refitted["*"]).mean() - correct.mean()) < 0.02
    assert measure_ece(stated(refitted["*"]), correct) < 0.05
    # A single candidate per mention is never capped: the fit stays as it was.
    alone = TrainingRows(np.zeros((n, len(FEATURES)), np.float32), correct.astype(np.int8), np.arange(n),
                         np.ones(n, dtype=np.int64), list(range(n)), ["xx"] * n, [0] * n)
    assert _platt_as_linked(platt, strong, alone, np.arange(n), correct, None, None, 0.0) == platt


def measure_ece(p_top: np.ndarray, correct: np.ndarray) -> float:
    from mel.fitting import reliability

    return reliability(p_top, correct)["ece"]


def test_the_refit_to_stated_probabilities_keeps_to_its_bounds_and_skips_what_platt_skips():
    from mel.fitting import PLATT_SLOPES, _platt_as_linked

    rng = np.random.default_rng(22)
    n, weak = 30, 40
    strong = rng.uniform(0.3, 0.9, size=n)
    top = np.arange(n) * (weak + 1)
    everything = np.ones(n, dtype=bool)  # every top candidate right: nothing to scale, as fit_platt says
    p, rows = strong_and_weak(strong, everything, weak)
    assert _platt_as_linked({"*": (0.5, 2.0)}, p, rows, top, everything, None, None, 0.0) == {"*": (0.5, 2.0)}
    # Right far more often than even a saturated scaling could state: the slope stops at its bound.
    mostly = np.arange(n) > 0
    p, rows = strong_and_weak(strong, mostly, weak)
    (a, c), = _platt_as_linked({"*": (0.5, 2.0)}, p, rows, top, mostly, None, None, 0.0).values()
    assert PLATT_SLOPES[0] <= a <= PLATT_SLOPES[1] and abs(c) <= 10


@pytest.mark.parametrize("missing", ["sklearn", "scipy"])
def test_fitting_without_the_tune_extra_says_what_to_install(monkeypatch, missing):
    import importlib.util

    from mel.errors import InputError
    from mel.fitting import recalibrate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    rows = synthetic_rows(100, seed=23)
    plain = Reranker(FEATURES, 0.0, 1.0, ())
    for fit in (lambda: fit_reranker(rows, FitSettings(trees=5)), lambda: recalibrate(plain, rows)):
        with pytest.raises(InputError, match=r"needs scikit-learn and SciPy: pip install 'mel\[tune\]'"):
            fit()
