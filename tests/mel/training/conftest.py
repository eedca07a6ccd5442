"""Fixtures for the training tests: a 2-layer tiny BERT and the synthetic data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_tiny_checkpoint
from tests.mel.training.train_helpers import write_dataset

pytest.importorskip("torch")


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A random-initialised 2-layer BERT (hidden 32) with a pooler and a WordPiece vocab."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("train-ckpt") / "bert-2l", seed=1, num_hidden_layers=2)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(kb.jsonl, train.jsonl, eval.jsonl): entities that share labels, told apart by context."""
    return write_dataset(tmp_path_factory.mktemp("synthetic"))
