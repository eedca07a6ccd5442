"""The dev-set benches (bench/bench_linker.py, bench_document_evidence.py, fit_default_reranker.py,
bench_own_links.py): the leave-one-set-out folds they share, the links / tune / test split, the
own-gold folds, and a clean skip where the dev sets are absent (CI has none)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import linker_data  # noqa: E402


def test_leave_one_set_out_fits_once_per_group_and_never_on_the_set_left_out():
    names = [*linker_data.ENGLISH, *linker_data.MULTILINGUAL, "sample"]
    fits: list[list[str]] = []

    def fit(others):
        fits.append(others)
        return len(fits) - 1

    left_out = linker_data.leave_one_set_out(names, fit)
    assert set(left_out) == {*linker_data.ENGLISH, *linker_data.MULTILINGUAL}  # the sample is only fitted on
    assert len(fits) == len(left_out) - 1  # OKE-2015 and OKE-2016 leave together
    assert left_out["elevant-oke-2015-train"] == left_out["elevant-oke-2016-train"]
    for name, fitted in left_out.items():
        others = fits[fitted]
        assert name not in others and "sample" in others
        if name in linker_data.GROUPS:  # neither OKE set is fitted on when one is left out
            assert not set(linker_data.GROUPS) & set(others)


def test_equal_set_weights_give_each_set_the_same_total():
    weights = linker_data.equal_set_weights([3, 1])
    assert len(weights) == 4 and abs(sum(weights[:3]) - weights[3]) < 1e-12 and abs(sum(weights) - 4) < 1e-12


def test_own_links_splits_documents_into_disjoint_links_tune_and_test(tmp_path, monkeypatch):
    import bench_own_links

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"id": "d{i}"}}\n' for i in range(60)), encoding="utf-8")
    monkeypatch.setattr(linker_data, "gold_path", lambda name: docs)
    parts = bench_own_links.split("any", tmp_path / "split")
    assert parts is not None
    lines = {part: path.read_text(encoding="utf-8").splitlines() for part, path in parts.items()}
    assert [len(lines[p]) for p in ("links", "tune", "test")] == [36, 12, 12]
    assert sorted(sum(lines.values(), [])) == sorted(docs.read_text(encoding="utf-8").splitlines())
    assert lines["test"][0] == '{"id": "d4"}' and lines["tune"][0] == '{"id": "d3"}'
    docs.write_text('{"id": "d0"}\n' * (bench_own_links.MIN_DOCUMENTS - 1), encoding="utf-8")
    assert bench_own_links.split("any", tmp_path / "small") is None


@pytest.mark.parametrize("bench", ["bench_linker.py", "bench_document_evidence.py", "fit_default_reranker.py",
                                   "bench_own_links.py"])
def test_the_dev_set_benches_skip_without_the_dev_sets(tmp_path, bench):
    env = {**os.environ, "MEL_EL_DEV": str(tmp_path / "absent")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / bench), "--work",
                           str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: the development sets are not in") and not (tmp_path / "work").exists()


def test_cached_rows_are_keyed_by_the_code_the_index_and_the_gold(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    (index / "manifest.json").write_text('{"format": 1}')
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "d1"}\n')
    folder = tmp_path / "mewsli"
    (folder / "en").mkdir(parents=True)
    (folder / "en" / "mentions.tsv").write_text("docid\n")
    key = linker_data.rows_key(index, gold, folder)
    assert key == linker_data.rows_key(index, gold, folder)
    gold.write_text('{"id": "d2"}\n')
    assert linker_data.rows_key(index, gold, folder) != key
    changed = linker_data.rows_key(index, gold, folder)
    (folder / "en" / "mentions.tsv").write_text("docid\tposition\n")
    assert linker_data.rows_key(index, gold, folder) != changed
    changed = linker_data.rows_key(index, gold, folder)
    (index / "manifest.json").write_text('{"format": 2}')
    assert linker_data.rows_key(index, gold, folder) != changed


def test_own_gold_measures_every_mention_once_with_trees_fitted_on_the_other_folds(monkeypatch):
    import bench_linker
    import numpy as np

    import mel.fitting
    from tests.mel.synthetic_rows import synthetic_rows

    rows = synthetic_rows(500, seed=3)
    fitted_on: list[set[int]] = []
    real_fit = mel.fitting.fit_reranker

    def recording_fit(subset, *args, **kwargs):
        fitted_on.append(set(subset.mention_doc))
        return real_fit(subset, *args, **kwargs)

    monkeypatch.setattr(mel.fitting, "fit_reranker", recording_fit)
    own = bench_linker.own_gold(rows, seed=0)
    assert own["mentions"] == rows.mentions and len(fitted_on) == 5
    for fold, documents in enumerate(fitted_on):
        assert documents and all(d % 5 != fold for d in documents)
    # The gold is drawn from softmax(string_score / 2): the best a ranker can do is the top score.
    score = rows.X[:, mel.fitting.FEATURES.index("string_score")]
    top = np.array([np.argmax(np.where(rows.mention == m, score, -np.inf)) for m in range(rows.mentions)])
    best = float(rows.y[top].mean())
    assert best - 0.05 <= own["R@1"] <= best + 0.02
