"""`mel index tune`'s choice between new trees and a recalibration of the current ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mel.fitting import FitSettings, TrainingRows, fit_reranker, recalibrate, stated_top
from mel.linker.features import FEATURES
from mel.linker.model import Calibration, Reranker, Tree
from mel.tuning import choose_refit as choose_between
from tests.mel.synthetic_rows import synthetic_rows

pytest.importorskip("sklearn")


def choose_refit(trees: Reranker, recalibrated: Reranker, held: TrainingRows) -> tuple[str, dict]:
    """The choice between two rerankers, from whether each one's top candidate is right on `held`."""
    return choose_between(stated_top(trees, held)[1], stated_top(recalibrated, held)[1])


def test_auto_refit_keeps_new_trees_only_when_clearly_right_more_often():
    rows = synthetic_rows(600, seed=16)
    good = fit_reranker(rows, FitSettings(trees=30))
    # A reranker that reads the score backwards is wrong where the fitted one is right.
    backwards = Reranker(FEATURES, 0.0, 1.0, (), Calibration())
    backwards = dataclasses.replace(backwards, trees=tuple(
        dataclasses.replace(tree, value=-tree.value) for tree in good.trees))
    held = synthetic_rows(300, seed=17)
    chosen, test = choose_refit(good, recalibrate(backwards, rows), held)
    assert chosen == "trees" and test["only_trees_right"] - test["only_recalibrated_right"] >= test["needed"] > 0
    chosen, test = choose_refit(backwards, recalibrate(good, rows), held)
    assert chosen == "calibration" and test["only_recalibrated_right"] > test["only_trees_right"]
    # Equal rankings (the same trees): nothing to choose between, so the calibration.
    assert choose_refit(good, recalibrate(good, rows), held) == (
        "calibration", {"only_trees_right": 0, "only_recalibrated_right": 0, "needed": 1})


def one_feature_reranker(name: str) -> Reranker:
    """Logit 1 for candidates whose feature `name` is above 0.5, else 0."""
    tree = Tree(np.array([FEATURES.index(name), -1, -1], dtype=np.int32), np.array([0.5, 0.0, 0.0]),
                np.array([1, -1, -1], dtype=np.int32), np.array([2, -1, -1], dtype=np.int32), np.array([0.0, 0.0, 1.0]))
    return Reranker(FEATURES, 0.0, 1.0, (tree,))


def duel(only_a: int, only_b: int, both: int = 20) -> TrainingRows:
    """Mentions of two candidates, the first the gold: reranker "string_score" is right on
    `only_a` + `both`, reranker "context_score" on `only_b` + `both`."""
    kinds = ["a"] * only_a + ["b"] * only_b + ["ab"] * both
    n = len(kinds)
    X = np.zeros((2 * n, len(FEATURES)), dtype=np.float32)
    for m, kind in enumerate(kinds):
        X[2 * m + (0 if "a" in kind else 1), FEATURES.index("string_score")] = 1
        X[2 * m + (0 if "b" in kind else 1), FEATURES.index("context_score")] = 1
    return TrainingRows(X, np.tile(np.array([1, 0], dtype=np.int8), n), np.repeat(np.arange(n), 2),
                        np.tile(np.array([2, 1]), n), list(range(n)), ["xx"] * n, [2] * n)


@pytest.mark.parametrize("only_trees,only_recalibrated,chosen", [
    (3, 1, "calibration"),  # 2 more right, under 2 * sqrt(4)
    (4, 0, "trees"),  # 4 more, at 2 * sqrt(4)
    (12, 8, "calibration"),  # 4 more, under 2 * sqrt(20)
    (30, 10, "trees"),
    (0, 0, "calibration"),
])
def test_the_auto_refit_margin_is_a_sign_test(only_trees, only_recalibrated, chosen):
    picked, test = choose_refit(one_feature_reranker("string_score"), one_feature_reranker("context_score"),
                                duel(only_trees, only_recalibrated))
    assert picked == chosen
    assert (test["only_trees_right"], test["only_recalibrated_right"]) == (only_trees, only_recalibrated)
