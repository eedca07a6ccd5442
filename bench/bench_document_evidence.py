"""Where the linker's document evidence comes from, measured leave-one-set-out on the dev sets.

    python bench/bench_document_evidence.py [--work /tmp/mel-bench-linker]

Reads ../shared/data/el-dev (not in the repo; skipped cleanly without it). Three features
(coref_longer, same_top, coherence) look at what the document's other mentions were linked
to. The linker takes those links from a first pass that needs no model (a loose name match,
else the best string score). This bench refits the reranker leave-one-set-out (as
bench/bench_linker.py's tuned column: fitted like the shipped default on the other sets, OKE-2015
and OKE-2016 left out together) with the document features computed from three choices:

- `first_pass`: the linker's own (what mel ships);
- `reranker_pass`: a reranker's top candidate (collective linking in two passes; the fitted
  sets' choices come from out-of-fold predictions, the left-out set's from a reranker fitted
  on the others, so no choice has seen its own gold);
- `gold`: the gold entity wherever it is a candidate, the first pass elsewhere: a ceiling on
  what any choice of the other mentions' links could give these features.

Micro R@1 and ECE per set go to bench/results/document_evidence.json, with how often the
candidate that coref_longer marks is the gold, and, under the shipped first pass, the stated
probability and the accuracy of the mentions whose top candidate it marks.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_linker  # noqa: E402
import linker_data  # noqa: E402

RESULTS = linker_data.ROOT / "bench" / "results" / "document_evidence.json"
FOLDS = 3


def collect(names: list[str], work: Path) -> tuple[dict, dict, dict]:
    """Rows of every set, and what the linker passed to document_features for them (its keys,
    documents and entry vectors, in row order), so that the features can be recomputed."""
    import numpy as np

    import mel.linker.ranker as ranker

    seen: list[tuple] = []
    original = ranker.document_features

    def record(X, rows, keys, docs, vectors, slices, first=None):
        seen.append((list(keys), list(docs), vectors.copy()))
        return original(X, rows, keys, docs, vectors, slices, first)

    documents, collected, inputs = {}, {}, {}
    ranker.document_features = record  # the linker's own call, observed (a measurement hook, nothing more)
    try:
        for name in names:
            seen.clear()
            index = linker_data.build(linker_data.kb_path(name), work / f"index-{name}")
            documents[name] = bench_linker.documents_of(name)
            collected[name] = bench_linker.rows(name, index, documents[name])
            inputs[name] = ([k for s in seen for k in s[0]], [d for s in seen for d in s[1]],
                            np.concatenate([s[2] for s in seen]))
            if len(inputs[name][2]) != len(collected[name].y):
                raise SystemExit(f"{name}: the recorded vectors do not match the rows")
    finally:
        ranker.document_features = original
    return documents, collected, inputs


def with_choices(rows, inputs, first):
    """A copy of `rows` whose document features come from `first` (one row or -1 per mention)."""
    import numpy as np

    from mel.linker.features import CandidateRows, document_features, mention_slices

    keys, docs, vectors = inputs
    X = rows.X.copy()
    candidates = CandidateRows(rows.mention, rows.qid, X, np.zeros(len(rows.qid), np.uint8))
    document_features(X, candidates, keys, docs, vectors, mention_slices(rows.mention, rows.mentions), first)
    return dataclasses.replace(rows, X=X)


def top_choices(scores, rows):
    """Each mention's highest-scoring row, the lowest QID on a tie (-1 without candidates), as mel's
    evaluation picks its top candidate."""
    from mel.linker.features import first_rows

    return first_rows(rows.mention, rows.mentions, rows.qid, -scores)


def gold_choices(rows):
    import numpy as np

    from mel.linker.features import first_choices

    first = first_choices(rows.X, rows.mention, rows.mentions)
    positive = np.flatnonzero(rows.y == 1)
    first[rows.mention[positive]] = positive
    return first


def reranker_pass(collected: dict, groups: dict, inputs: dict, names: list[str]) -> dict:
    """Per left-out set: (rows whose document features come from a reranker's choices, the
    reranker fitted on the other sets' rows made the same way)."""
    import numpy as np

    from mel.fitting import FitSettings, _fit_trees, concatenate

    settings = FitSettings()
    out = {}

    def fit(others: list[str]):
        pool = concatenate([collected[n] for n in others])
        weights = np.asarray(linker_data.equal_set_weights([collected[n].mentions for n in others]))
        folds = np.array([g for n in others for g in groups[n]]) % FOLDS
        scores = np.zeros(len(pool.y))
        for fold in range(FOLDS):  # out-of-fold choices for the fitted sets
            held = folds == fold
            part = held[pool.mention]
            scores[part] = _fit_trees(pool.subset(~held), settings, weights[~held]).decision_function(pool.X[part])
        remade, start = {}, 0
        for n in others:
            rows = collected[n]
            remade[n] = with_choices(rows, inputs[n], top_choices(scores[start:start + len(rows.y)], rows))
            start += len(rows.y)
        return _fit_trees(pool, settings, weights), linker_data.fit_like_default(remade, groups, others)

    for name, (first_pass, reranker) in linker_data.leave_one_set_out(names, fit).items():
        rows = collected[name]
        out[name] = (with_choices(rows, inputs[name], top_choices(first_pass.decision_function(rows.X), rows)),
                     reranker)
    return out


def coref_longer_figures(rows, reranker) -> dict:

    from mel.linker.features import COLUMN
    from mel.linker.model import calibrated

    marked = rows.X[:, COLUMN["coref_longer"]] > 0
    p = calibrated(reranker.logits(rows.X), rows.mention, rows.mention_lang, reranker.calibration)
    top = top_choices(p, rows)
    top = top[top >= 0]
    chosen = top[marked[top]]
    return {"rows_marked": int(marked.sum()), "marked_is_gold": round(float(rows.y[marked].mean()), 3)
            if marked.any() else None,
            "top_marked": {"mentions": int(len(chosen)),
                           "mean_probability": round(float(p[chosen].mean()), 3) if len(chosen) else None,
                           "right": round(float(rows.y[chosen].mean()), 3) if len(chosen) else None}}


def main() -> int:
    work = linker_data.work_from_command_line(__doc__)
    if work is None:
        return 0
    from mel.fitting import measure

    names = [*linker_data.ENGLISH, *linker_data.MULTILINGUAL, "sample"]
    documents, collected, inputs = collect(names, work)
    groups = bench_linker.content_groups(documents, collected)
    golden = {n: with_choices(collected[n], inputs[n], gold_choices(collected[n])) for n in names}
    runs = {
        "first_pass": {name: (collected[name], reranker) for name, reranker in linker_data.leave_one_set_out(
            names, lambda others: linker_data.fit_like_default(collected, groups, others)).items()},
        "reranker_pass": reranker_pass(collected, groups, inputs, names),
        "gold": {name: (golden[name], reranker) for name, reranker in linker_data.leave_one_set_out(
            names, lambda others: linker_data.fit_like_default(golden, groups, others)).items()},
    }
    results: dict = {"command": "python bench/bench_document_evidence.py", "sets": {}}
    for run, per_set in runs.items():
        for name, (rows, reranker) in per_set.items():
            measured = measure(reranker, rows)
            results["sets"].setdefault(name, {"mentions": measured["mentions"]})[run] = {
                "R@1": measured["R@1"], "ece": measured["calibration"]["ece"]}
            print(f"{run:14s} {name:26s} R@1 {100 * measured['R@1']:5.1f}  ECE {measured['calibration']['ece']}",
                  flush=True)
            if run == "first_pass":
                results["sets"][name]["coref_longer"] = figures = coref_longer_figures(rows, reranker)
                print(f"{'':14s} coref_longer: {figures}", flush=True)
    linker_data.write_results(results, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
