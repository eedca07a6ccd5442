"""The fused linker against the best single method, on the development sets and the sample.

    python bench/bench_linker.py [--work /tmp/mel-bench-linker] [--speed-docs 200] [--seeds 0,1,2]

Reads ../shared/data/el-dev (not in the repo; skipped cleanly without it). Per set, with
the default model and a linker index of the set's own KB (--kinds label,description):

- `labels` (the string view alone) and the untuned linker (the default reranker shipped
  with mel): micro R@1 from `mel eval jsonl`, and the linker's calibration error;
- the linker tuned leave-one-set-out: the reranker fitted (as the default is: each set
  weighing the same, one Platt scaling for all languages) on the other sets' gold mentions,
  measured on the set left out
  (OKE-2015 and OKE-2016 share sentences, so they are left out together), once per fit seed
  (--seeds; a fit samples negatives, so one seed's per-set figures move by about 2 points):
  the mean over seeds, and each seed's;
- that tuned reranker recalibrated on a fifth of the set left out (its documents i mod 5 == 4:
  `mel index tune --refit calibration` on a little gold of one's own) and measured on the
  other four fifths, next to the tuned one on the same four fifths;
- for reference, the reranker fitted on the set's own gold alone (as `mel index tune --refit
  trees` would, seed: the first of --seeds), five-fold by document (i mod 5), each fifth
  measured with trees fitted on the other four: how far gold from the same collection takes
  the trees, where no other set teaches its conventions;
- with every ECE, `ece_if_calibrated`: what a perfectly calibrated linker would show on as
  many mentions (sampling noise alone);
- the English sets again against the union of their KBs;
- speed: `mel link` of the same documents with --method labels, biencoder and linker.

Figures go to bench/results/linker.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import linker_data  # noqa: E402

RESULTS = linker_data.ROOT / "bench" / "results" / "linker.json"


def evaluate(method: str, gold: Path, index: Path, work: Path, tag: str) -> dict:
    report = work / f"report-{tag}-{method}.json"
    kind = "mewsli9" if gold.is_dir() else "jsonl"
    linker_data.cli("eval", kind, gold, "--index", index, "--method", method, "--k", "1,10", "--report", report, "-q",
                    expect=(0, 3))
    data = json.loads(report.read_text())
    micro = data["results"]["micro"]
    out = {"mentions": micro["mentions"], "R@1": round(micro["R@1"], 4), "R@10": round(micro["R@10"], 4)}
    if data.get("calibration"):
        out["ece"] = data["calibration"]["ece"]
        out["ece_if_calibrated"] = data["calibration"]["ece_if_calibrated"]
        out["nil"] = data["nil"]
    return out


def rows(name: str, index: Path, docs: list):
    from mel.methods import open_ranker
    from mel.tuning import collect_rows

    return collect_rows(open_ranker("linker", index=str(index)), docs)


def content_groups(documents: dict[str, list], collected: dict) -> dict[str, list[int]]:
    """Per set, one fold group per mention row: the same document in two sets (OKE-2015's
    sentences are in OKE-2016) gets one group, or the out-of-fold predictions that calibrate
    the reranker would have seen the document's twin."""
    ids: dict[tuple, int] = {}  # a document's text (or, with no linkable mention, its place)
    out = {}
    for name, docs in documents.items():
        keys = [next(((m.span.text,) for m in d.mentions if m.span), (name, number)) for number, d in enumerate(docs)]
        out[name] = [ids.setdefault(keys[doc], len(ids)) for doc in collected[name].mention_doc]
    return out


def own_gold(collected, seed: int, folds: int = 5) -> dict:
    """R@1 and calibration of rerankers fitted on the set's own gold: each fold (documents
    i mod `folds`) measured with a reranker fitted on the other folds alone."""
    import numpy as np

    from mel.fitting import FitSettings, fit_reranker, reliability, stated_top

    documents = np.array(collected.mention_doc)
    stated, right = [], []
    for fold in range(folds):
        held = documents % folds == fold
        reranker = fit_reranker(collected.subset(~held), FitSettings(seed=seed))  # as mel index tune fits
        p_top, correct = stated_top(reranker, collected.subset(held))
        stated.append(p_top)
        right.append(correct)
    correct = np.concatenate(right)
    calibration = reliability(np.concatenate(stated), correct)
    return {"mentions": int(len(correct)), "folds": f"documents i mod {folds}", "seed": seed,
            "R@1": round(float(correct.mean()), 4), "ece": calibration["ece"],
            "ece_if_calibrated": calibration["ece_if_calibrated"]}


def english_micro(sets: dict) -> dict:
    """Micro R@1 over the English sets: `labels`, the untuned linker and the tuned column (mean over seeds)."""
    out = {}
    for column in ("labels", "linker_untuned", "linker_tuned_leave_one_out"):
        mentions = sum(sets[name][column]["mentions"] for name in linker_data.ENGLISH)
        right = sum(sets[name][column]["R@1"] * sets[name][column]["mentions"] for name in linker_data.ENGLISH)
        out[column] = round(right / mentions, 4)
    return out


def documents_of(name: str):
    from mel.gold import gold_documents
    from mel.skips import SkipReport

    return gold_documents(str(linker_data.gold_path(name)), SkipReport())


def speed(index: Path, gold: Path, work: Path, docs: int) -> dict:
    """Wall seconds of `mel link` on the first `docs` documents, per method (same input, same run)."""
    sample = work / "speed-docs.jsonl"
    lines = gold.read_text(encoding="utf-8").splitlines()[:docs]
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mentions = sum(len(json.loads(line)["mentions"]) for line in lines)
    out: dict = {"documents": len(lines), "mentions": mentions}
    for method in ("labels", "biencoder", "linker"):
        best = None
        for _ in range(2):
            started = time.perf_counter()
            linker_data.cli("link", sample, "--index", index, "--method", method, "-o", work / "speed-out.jsonl", "-q",
                            expect=(0, 3))
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        out[method] = {"seconds": round(best, 2), "mentions_per_s": round(mentions / best, 1)}
    slowest = max(out["labels"]["seconds"], out["biencoder"]["seconds"])
    out["linker_over_slowest_single_view"] = round(out["linker"]["seconds"] / slowest, 3)
    return out


def main() -> int:
    parser = linker_data.bench_parser(__doc__)
    parser.add_argument("--speed-docs", type=int, default=200)
    parser.add_argument("--seeds", type=lambda text: [int(seed) for seed in text.split(",")], default=[0, 1, 2],
                        help="fit seeds of the tuned column (comma-separated; default 0,1,2)")
    args = parser.parse_args()
    work = linker_data.work_folder(args)
    if work is None:
        return 0
    from mel.fitting import measure, recalibrate
    from mel.tuning import split

    names = [*linker_data.ENGLISH, *linker_data.MULTILINGUAL, "sample"]
    indexes = {name: linker_data.build(linker_data.kb_path(name), work / f"index-{name}") for name in names}
    results: dict = {"sets": {}, "command": "python bench/bench_linker.py"}
    # First, while the process is fresh: after the fits below, the same links ran up to 1.4x slower.
    results["speed"] = speed(indexes["elevant-msnbc-updated"], linker_data.gold_path("elevant-msnbc-updated"), work,
                             args.speed_docs)
    print(f"speed: {results['speed']}", flush=True)
    for name in names:
        gold = linker_data.gold_path(name)
        labels = evaluate("labels", gold, indexes[name], work, name)
        linker = evaluate("linker", gold, indexes[name], work, name)
        results["sets"][name] = {"labels": labels, "linker_untuned": linker,
                                 "gain_R@1_points": round(100 * (linker["R@1"] - labels["R@1"]), 1)}
        print(f"{name:26s} labels {100 * labels['R@1']:5.1f}  linker {100 * linker['R@1']:5.1f}  "
              f"ECE {linker.get('ece')}", flush=True)
    # Leave one set out: fit on the others' gold (the dev sets and the sample), measure on the one left out.
    docs = {name: documents_of(name) for name in names}
    collected = {name: rows(name, indexes[name], docs[name]) for name in names}
    groups = content_groups(docs, collected)
    by_seed: dict[str, list[dict]] = {}
    recalibrated: dict[str, list[dict]] = {}
    halves = {name: split(rows) for name, rows in collected.items()}  # (the rest, a fifth to recalibrate on)
    for seed in args.seeds:
        left_out = linker_data.leave_one_set_out(
            names, lambda others, seed=seed: linker_data.fit_like_default(collected, groups, others, seed=seed))
        for name, reranker in left_out.items():
            measured = measure(reranker, collected[name])
            by_seed.setdefault(name, []).append({"seed": seed, "R@1": measured["R@1"],
                                                 "ece": measured["calibration"]["ece"],
                                                 "ece_if_calibrated": measured["calibration"]["ece_if_calibrated"]})
            rest, fifth = halves[name]
            tuned, again = measure(reranker, rest), measure(recalibrate(reranker, fifth), rest)
            recalibrated.setdefault(name, []).append({
                "seed": seed, "R@1": again["R@1"], "ece_tuned": tuned["calibration"]["ece"],
                "ece": again["calibration"]["ece"], "ece_if_calibrated": again["calibration"]["ece_if_calibrated"]})
        print(f"seed {seed}: tuned leave-one-out " + "  ".join(
            f"{name} {100 * runs[-1]['R@1']:.1f} ({runs[-1]['ece']:.3f})" for name, runs in by_seed.items()),
            flush=True)
    for name, runs in by_seed.items():
        entry = results["sets"][name]
        entry["linker_tuned_leave_one_out"] = {
            "mentions": collected[name].mentions, "seeds": runs,
            **{key: round(sum(run[key] for run in runs) / len(runs), 4) for key in ("R@1", "ece", "ece_if_calibrated")},
            "R@1_range": [min(run["R@1"] for run in runs), max(run["R@1"] for run in runs)],
            "ece_range": [min(run["ece"] for run in runs), max(run["ece"] for run in runs)]}
        entry["tuned_gain_R@1_points"] = round(100 * (entry["linker_tuned_leave_one_out"]["R@1"]
                                                      - entry["labels"]["R@1"]), 1)
        again = recalibrated[name]
        rest, fifth = halves[name]
        entry["linker_tuned_then_recalibrated"] = {
            "recalibrated_on": "documents i mod 5 == 4 of this set", "measured_on": "its other documents",
            "mentions": rest.mentions, "recalibration_mentions": fifth.mentions,
            "seeds": again, **{key: round(sum(run[key] for run in again) / len(again), 4)
                               for key in ("R@1", "ece_tuned", "ece", "ece_if_calibrated")}}
        tuned = entry["linker_tuned_leave_one_out"]
        print(f"{name:26s} tuned leave-one-out, mean of {len(runs)} seeds {100 * tuned['R@1']:5.1f} "
              f"({100 * tuned['R@1_range'][0]:.1f}-{100 * tuned['R@1_range'][1]:.1f})  ECE {tuned['ece']:.3f} "
              f"({tuned['ece_range'][0]:.3f}-{tuned['ece_range'][1]:.3f}; calibrated would show "
              f"{tuned['ece_if_calibrated']:.3f})", flush=True)
        recal = entry["linker_tuned_then_recalibrated"]
        print(f"{'':26s} recalibrated on {recal['recalibration_mentions']:,} of its mentions, on the other "
              f"{recal['mentions']:,}: ECE {recal['ece_tuned']:.3f} -> {recal['ece']:.3f} (calibrated would show "
              f"{recal['ece_if_calibrated']:.3f})", flush=True)
    for name in by_seed:
        entry = results["sets"][name]
        entry["linker_own_gold_five_fold"] = own = own_gold(collected[name], args.seeds[0])
        print(f"{name:26s} fitted on its own gold (5-fold) {100 * own['R@1']:5.1f}  ECE {own['ece']:.3f} "
              f"(calibrated would show {own['ece_if_calibrated']:.3f})", flush=True)
    results["english_micro"] = english_micro(results["sets"])
    print(f"English micro: {results['english_micro']}", flush=True)
    union = linker_data.build(linker_data.union_kb(work), work / "index-english-union")
    results["english_union_kb"] = {}
    for name in linker_data.ENGLISH:
        gold = linker_data.gold_path(name)
        labels = evaluate("labels", gold, union, work, f"union-{name}")
        linker = evaluate("linker", gold, union, work, f"union-{name}")
        results["english_union_kb"][name] = {"labels": labels, "linker_untuned": linker,
                                            "gain_R@1_points": round(100 * (linker["R@1"] - labels["R@1"]), 1)}
        print(f"union KB {name:17s} labels {100 * labels['R@1']:5.1f}  linker {100 * linker['R@1']:5.1f}", flush=True)
    results = {key: results[key] for key in ("sets", "command", "english_micro", "english_union_kb", "speed")}
    linker_data.write_results(results, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
