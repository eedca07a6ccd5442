"""The reranker file: trees evaluated in NumPy, calibration, validation, and readers of older files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mel.errors import ArtifactError
from mel.fitting import FitSettings, fit_reranker
from mel.linker.features import FEATURES
from mel.linker.model import Calibration, Reranker, calibrated, read_reranker
from tests.mel.synthetic_rows import synthetic_rows

pytest.importorskip("sklearn")


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
    (lambda d: d["meta"].update(gold_sketch={"capacity": 4, "mentions": 2, "window": 100, "fingerprints": ["x"]}),
     "trees: unreadable gold sketch"),
    (lambda d: d["meta"].update(refit="calibration", trees_from={}, gold_sketch={
        "capacity": 1, "mentions": 2, "window": 100, "fingerprints": ["02", "01"]}), "calibration: not a gold sketch"),
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
