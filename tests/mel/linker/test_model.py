"""The reranker file: trees exported from scikit-learn and evaluated in NumPy, calibration, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mel.errors import ArtifactError
from mel.linker.features import FEATURES
from mel.linker.model import Calibration, Reranker, calibrated, read_reranker, softmax_probabilities
from mel.tuning import FitSettings, TrainingRows, concatenate, fit_reranker, fit_softmax, measure

pytest.importorskip("sklearn")


def synthetic_rows(n_mentions: int, seed: int, temperature: float = 2.0, none_logit: float = -1.0) -> TrainingRows:
    """Mentions with 5 candidates each; candidate scores are features; the gold is drawn from
    softmax(score / T) with a "none" option, so the true probabilities are known."""
    rng = np.random.default_rng(seed)
    per = 5
    mention = np.repeat(np.arange(n_mentions), per)
    X = np.zeros((n_mentions * per, len(FEATURES)), dtype=np.float32)
    score = rng.normal(0, 2, size=len(mention))
    X[:, FEATURES.index("string_score")] = score
    X[:, FEATURES.index("log_qid")] = rng.normal(size=len(mention))  # noise
    p = softmax_probabilities(score, mention, temperature, none_logit)
    y = np.zeros(len(mention), dtype=np.int8)
    for m in range(n_mentions):
        rows = np.arange(m * per, (m + 1) * per)
        choice = rng.choice(per + 1, p=np.append(p[rows], 1 - p[rows].sum()))
        if choice < per:
            y[rows[choice]] = 1
    docs = list(range(n_mentions))
    return TrainingRows(X, y, mention, np.tile(np.arange(1, per + 1), n_mentions), docs,
                        ["xx"] * n_mentions, [0] * n_mentions)


def test_the_exported_trees_give_scikit_learns_logits():
    from mel.tuning import _export, _fit_trees

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


def test_write_then_reload_gives_identical_scores(tmp_path):
    rows = synthetic_rows(300, seed=2)
    reranker = fit_reranker(rows, FitSettings(trees=40))
    path = tmp_path / "reranker.json"
    path.write_text(json.dumps(reranker.to_json()))
    again = read_reranker(path, FEATURES)
    langs = ["xx"] * rows.mentions
    assert np.array_equal(again.probabilities(rows.X, rows.mention, langs),
                          reranker.probabilities(rows.X, rows.mention, langs))
    assert again.calibration == reranker.calibration and again.features == FEATURES


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


def test_calibrated_is_monotone_within_a_mention():
    logits = np.array([3.0, 1.0, -2.0, 0.5, 0.4])
    mention = np.array([0, 0, 0, 1, 1])
    p = calibrated(logits, mention, ["en", "de"], Calibration(1.5, 0.0, {"*": (1.2, 0.1), "de": (0.8, -0.3)}))
    assert p[0] > p[1] > p[2] and p[3] > p[4] and np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(format="x"), "not a reranker"),
    (lambda d: d.update(features=["nope", *d["features"][1:]]), "does not compute"),
    (lambda d: d["trees"][0].update(left=[5] * len(d["trees"][0]["left"])), "inconsistent"),
    (lambda d: d["trees"][0].update(feature=[len(FEATURES)] * len(d["trees"][0]["feature"])), "inconsistent"),
    (lambda d: d["calibration"].update(temperature=-1), "out of range"),
    (lambda d: d.pop("trees"), "malformed"),
])
def test_a_damaged_reranker_file_is_refused(tmp_path, change, message):
    data = fit_reranker(synthetic_rows(200, seed=6), FitSettings(trees=12)).to_json()
    data = json.loads(json.dumps(data))
    change(data)
    path = tmp_path / "reranker.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        read_reranker(path, FEATURES)


def test_a_reranker_fitted_on_fewer_features_still_reads_and_scores_its_own_columns(tmp_path):
    rows = synthetic_rows(300, seed=3)
    reranker = fit_reranker(rows, FitSettings(trees=20))
    data = json.loads(json.dumps(reranker.to_json()))
    older = [name for name in FEATURES if name != "acronym"]  # as an earlier mel computed them
    keep = [FEATURES.index(name) for name in older]
    for tree in data["trees"]:  # renumber the trees' features into the older list
        tree["feature"] = [older.index(FEATURES[f]) if f >= 0 else f for f in tree["feature"]]
    data["features"] = older
    path = tmp_path / "older.json"
    path.write_text(json.dumps(data))
    again = read_reranker(path, FEATURES)
    assert again.features == tuple(older)
    assert np.allclose(again.logits(rows.X), reranker.logits(rows.X))
    assert np.allclose(again.logits(rows.X), Reranker.from_json(data, "older").logits(rows.X[:, keep]))


def test_the_default_reranker_ships_and_reads():
    default = read_reranker(None, FEATURES)
    assert default.trees and default.features == FEATURES
    assert set(default.meta.get("fitted_on", {})) >= {"sample"}


def test_calibrated_probabilities_of_a_mention_never_sum_above_one():
    # Two equally likely candidates: an expanding Platt map lifts each above 0.5.
    logits, mention = np.array([2.0, 2.0, -5.0, 0.0]), np.array([0, 0, 0, 1])
    p = calibrated(logits, mention, ["en", "en"], Calibration(1.0, -10.0, {"*": (3.0, 1.0)}))
    assert p[:3].sum() <= 1 + 1e-9 and abs(p[0] - p[1]) < 1e-12 and p[0] > 0.45
    assert 0.5 < p[3] < 1  # a lone candidate keeps its Platt probability


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
    from mel.tuning import fit_platt

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
