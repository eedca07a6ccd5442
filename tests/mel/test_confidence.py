"""The confidence measures: the reliability table, its ECE and noise floor, and NIL counts."""

from __future__ import annotations

from math import exp, lgamma, log

import numpy as np
import pytest

from mel.confidence import EXACT_NOISE_MENTIONS, NilCounts, Reliability


def test_the_ece_weighs_each_bin_by_its_mentions():
    table = Reliability()
    # Bin 0.9-1.0: four mentions at 0.95, three right (accuracy 0.75); bin 0.2-0.3: one at 0.25, right.
    table.add(np.array([0.95, 0.95, 0.95, 0.95, 0.25]), np.array([True, True, True, False, True]))
    report = table.to_json()
    assert report["ece"] == pytest.approx(4 / 5 * 0.2 + 1 / 5 * 0.75)
    assert [b["mentions"] for b in report["bins"]] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 4]
    assert report["bins"][9] == {"from": 0.9, "to": 1.0, "mentions": 4, "mean_probability": 0.95, "accuracy": 0.75}
    assert report["bins"][0]["mean_probability"] is None
    # A probability of exactly 1 falls in the last bin, one of 0 in the first.
    edges = Reliability()
    edges.add(np.array([0.0, 1.0]), np.array([False, True]))
    assert [b["mentions"] for b in edges.to_json()["bins"]][::9] == [1, 1]
    assert edges.to_json()["ece"] == 0.0


def test_nil_counts_link_only_at_or_above_the_threshold():
    nil = NilCounts(threshold=0.5)
    top = np.array([7, 7, 8, 9, -1])  # -1: no candidate
    probability = np.array([0.9, 0.4, 0.6, 0.5, 0.0])
    gold = np.array([7, 7, 5, 4, 3])
    in_kb = np.array([True, True, True, False, False])
    nil.add(top, probability, gold, in_kb)
    report = nil.to_json()
    assert (report["linked"], report["correct"], report["mentions"]) == (3, 1, 5)
    assert report["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert report["recall"] == pytest.approx(1 / 5)
    assert report["f1"] == pytest.approx(2 * (1 / 3) * (1 / 5) / (1 / 3 + 1 / 5), abs=1e-4)
    assert report["recall_in_kb"] == pytest.approx(1 / 3, abs=1e-4)
    assert (report["not_in_kb"], report["not_in_kb_left_nil"]) == (2, 1)


def test_the_calibration_noise_floor_is_the_expected_ece_of_a_calibrated_linker():
    one = Reliability()
    one.add(np.array([0.9]), np.array([True]))
    assert one.to_json()["ece_if_calibrated"] == pytest.approx(0.18)  # 0.9 * 0.1 + 0.1 * 0.9
    two = Reliability()
    two.add(np.array([0.5, 0.5]), np.array([True, False]))
    assert two.to_json()["ece_if_calibrated"] == pytest.approx(0.25)  # 0, 1 or 2 right: 1/4 * 1/2 * 2
    # A bin past EXACT_NOISE_MENTIONS takes the normal limit: close to the exact binomial expectation.
    n, p = EXACT_NOISE_MENTIONS + 1000, 0.95
    big = Reliability()
    big.add(np.full(n, p), np.ones(n, dtype=bool))
    assert big.held[9] is None
    exact = sum(exp(lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * log(p) + (n - k) * log(1 - p))
                * abs(k / n - p) for k in range(n + 1))
    assert big.to_json()["ece_if_calibrated"] == pytest.approx(exact, rel=0.02)
    # On a few hundred mentions a calibrated linker's ECE is near the floor, a miscalibrated one's far above.
    rng = np.random.default_rng(0)
    probability = rng.beta(4, 1.5, 300)
    floor = []
    for _ in range(50):
        calibrated = Reliability()
        calibrated.add(probability, rng.random(300) < probability)
        floor.append(calibrated.to_json())
    measured = float(np.mean([f["ece"] for f in floor]))
    assert 0.03 < floor[0]["ece_if_calibrated"] < 0.07
    assert measured == pytest.approx(floor[0]["ece_if_calibrated"], rel=0.15)
    overconfident = Reliability()
    overconfident.add(probability, rng.random(300) < probability - 0.2)
    assert overconfident.to_json()["ece"] > 2.5 * overconfident.to_json()["ece_if_calibrated"]
