"""Confidence measures of a linker's top-1 probabilities against the gold: the reliability
table with its expected calibration error (and the ECE that sampling noise alone would give
a perfectly calibrated linker), and NIL-aware precision / recall / F1 at a probability
threshold. `mel eval` and `mel index tune` report both."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_NOISE_MENTIONS = 2000  # a bin up to this size gets the exact noise expectation, a larger one its normal limit


class Reliability:
    """Top-1 probabilities against correctness, in ten bins (expected calibration error).

    With the ECE comes `ece_if_calibrated`: the ECE that a perfectly calibrated linker would
    show, on average, with these probabilities on this many mentions. Sampling noise alone gives
    it; on a few hundred mentions it is a few hundredths, so an ECE near it is as small as the
    gold can tell."""

    def __init__(self, bins: int = 10):
        self.edges = np.linspace(0, 1, bins + 1)
        self.count = np.zeros(bins, dtype=np.int64)
        self.probability = np.zeros(bins)
        self.correct = np.zeros(bins)
        self.variance = np.zeros(bins)  # sum of p (1 - p): the variance of the bin's correct count
        self.held: list[list[np.ndarray] | None] = [[] for _ in range(bins)]  # a small bin's probabilities

    def add(self, probability: np.ndarray, correct: np.ndarray) -> None:
        where = np.clip(np.searchsorted(self.edges, probability, side="right") - 1, 0, len(self.count) - 1)
        np.add.at(self.count, where, 1)
        np.add.at(self.probability, where, probability)
        np.add.at(self.correct, where, correct.astype(np.float64))
        np.add.at(self.variance, where, probability * (1 - probability))
        for b in np.unique(where).tolist():
            held = self.held[b]
            if held is not None:
                held.append(np.asarray(probability[where == b], dtype=np.float64))
                self.held[b] = held if self.count[b] <= EXACT_NOISE_MENTIONS else None

    def _noise(self, b: int) -> float:
        """E |accuracy - mean probability| of bin b when each mention is right with its probability."""
        n = int(self.count[b])
        held = self.held[b]
        if held is None:  # the normal limit: E|X| = sigma sqrt(2 / pi)
            return math.sqrt(2 / math.pi * self.variance[b]) / n
        distribution = np.ones(1)  # of the number right, one mention at a time
        for p in np.concatenate(held).tolist():
            distribution = np.append(distribution * (1 - p), 0.0) + np.insert(distribution * p, 0, 0.0)
        return float(distribution @ np.abs(np.arange(n + 1) / n - self.probability[b] / n))

    def to_json(self) -> dict:
        total = max(1, int(self.count.sum()))
        ece, noise, bins = 0.0, 0.0, []
        for i, n in enumerate(self.count.tolist()):
            mean = float(self.probability[i] / n) if n else None
            accuracy = float(self.correct[i] / n) if n else None
            if mean is not None and accuracy is not None:
                ece += n / total * abs(mean - accuracy)
                noise += n / total * self._noise(i)
            bins.append({"from": round(float(self.edges[i]), 2), "to": round(float(self.edges[i + 1]), 2),
                         "mentions": n, "mean_probability": None if mean is None else round(float(mean), 4),
                         "accuracy": None if accuracy is None else round(float(accuracy), 4)})
        return {"ece": round(float(ece), 4), "ece_if_calibrated": round(float(noise), 4), "bins": bins}


@dataclass
class NilCounts:
    """Linking with NIL below a probability threshold, against the gold (NIL when not in the KB)."""

    threshold: float = 0.0
    mentions: int = 0
    linked: int = 0
    correct: int = 0
    in_kb: int = 0
    not_in_kb_left_nil: int = 0

    def add(self, top: np.ndarray, probability: np.ndarray, gold: np.ndarray, in_kb: np.ndarray) -> None:
        linked = (top >= 0) & (probability >= self.threshold)
        self.mentions += len(gold)
        self.linked += int(linked.sum())
        self.correct += int((linked & (top == gold)).sum())
        self.in_kb += int(in_kb.sum())
        self.not_in_kb_left_nil += int((~linked & ~in_kb).sum())

    def to_json(self) -> dict:
        precision = self.correct / self.linked if self.linked else 0.0
        recall = self.correct / self.mentions if self.mentions else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"threshold": self.threshold, "mentions": self.mentions, "linked": self.linked,
                "correct": self.correct, "precision": round(precision, 4), "recall": round(recall, 4),
                "f1": round(f1, 4), "recall_in_kb": round(self.correct / self.in_kb, 4) if self.in_kb else 0.0,
                "not_in_kb": self.mentions - self.in_kb, "not_in_kb_left_nil": self.not_in_kb_left_nil}
