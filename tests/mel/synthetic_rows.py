"""Synthetic candidate rows whose true probabilities are known, for the fitting, tuning and
reranker-file tests."""

from __future__ import annotations

import numpy as np

from mel.fitting import TrainingRows
from mel.linker.features import FEATURES
from mel.linker.model import softmax_probabilities


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
