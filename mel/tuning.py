"""`mel index tune`: fit the fused linker's reranker and calibration on gold documents.

1. Every gold mention goes through the linker's candidate stage (the index's views and
   tables, in the one streaming pipeline); each candidate row gets its features and a
   label (is it the gold entity).
2. Documents are split (a fixed 1 in 5 held out). On the rest, mel.fitting fits new trees
   (with their calibration on out-of-fold predictions) and a recalibration of the index's
   current trees (temperature, "none" logit and Platt scaling only).
3. The held-out documents measure R@1 before (the index's current reranker) and after each,
   and the calibration (expected calibration error and a reliability table). With
   `refit="auto"` (the default) the new trees are kept only when they are right on clearly
   more held-out mentions (`choose_refit`): a few hundred gold mentions are too few to grow
   trees that beat the shipped ones on new text, and plenty to calibrate them.
4. The chosen one is fitted again on every document and written into the index as
   reranker.json (plain JSON: feature list, trees, calibration, versions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mel.artifacts import command_line, read_json, sha256_file, write_json
from mel.errors import InputError
from mel.fitting import FitSettings, TrainingRows, concatenate, fit_reranker, measure, recalibrate, stated_top
from mel.gold import EvalDocument, gold_documents, gold_fingerprints
from mel.indexes.manifest import MANIFEST_FILE
from mel.link_sketch import LinkOverlap, sketch_json
from mel.linker.folder import RERANKER_FILE
from mel.linker.model import Reranker
from mel.linker.ranker import FusedLinker
from mel.pipeline import run_stream
from mel.skips import SkipReport
from mel.streams import display_name

HELD_OUT_EVERY = 5  # document i is held out when i % 5 == 4
# Gold with this share of its mentions among the index's training links is refused: tuned on
# their own counts and contexts, the reranker collapses on new text (mel.link_sketch).
MAX_LINK_OVERLAP = 0.01
REFITS = ("auto", "trees", "calibration")
# auto keeps new trees when, among held-out mentions where exactly one refit is right, the trees
# win by this many standard deviations of a fair coin (a sign test): on a few dozen held-out
# mentions, one or two more right is noise, and new trees fitted on so little often lose on new text.
TREES_MARGIN_SIGMAS = 2.0


def collect_rows(linker: FusedLinker, documents: Iterable[EvalDocument], *, doc_offset: int = 0,
                 chunk_size: int = 1024) -> TrainingRows:
    """Candidate rows of every linkable gold mention of `documents` (mentions whose text does not
    match are left out: there is nothing to link)."""
    parts: list[tuple] = []
    docs: list[int] = []
    langs: list[str] = []
    golds: list[int] = []
    counter = {"doc": doc_offset, "mention": 0}

    def prepare(group: list[EvalDocument]):
        spans, meta = [], []
        for document in group:
            number = counter["doc"]
            counter["doc"] += 1
            for m in document.mentions:
                if m.span is not None:
                    spans.append(dataclasses.replace(m.span, doc=number))
                    meta.append((number, m.lang, m.gold))
        return meta, linker.prepare(spans)

    def consume(group, ranked) -> bool:
        meta, rows = ranked
        base = counter["mention"]
        counter["mention"] += len(meta)
        for number, lang, gold in meta:
            docs.append(number)
            langs.append(lang)
            golds.append(gold)
        gold = np.array([g for _, _, g in meta], dtype=np.int64)
        y = (rows.qid == gold[rows.mention]).astype(np.int8) if len(rows.qid) else np.zeros(0, np.int8)
        parts.append((rows.X, y, rows.mention + base, rows.qid))
        return True

    run_stream(documents, units=lambda d: len(d.mentions), prepare=prepare,
               rank=lambda prepared: (prepared[0], linker.candidates(prepared[1])), consume=consume,
               chunk_size=chunk_size)
    if not parts or not docs:
        raise InputError("no linkable gold mentions to tune on")
    X, y, mention, qid = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return TrainingRows(X, y, mention, qid, docs, langs, golds)


# --- choosing -------------------------------------------------------------------------------


def choose_refit(trees_right: np.ndarray, recalibrated_right: np.ndarray) -> tuple[str, dict]:
    """"trees" when the new trees are right on clearly more held-out mentions than the
    recalibrated current reranker (per mention, whether each one's top candidate is the gold:
    mel.fitting.stated_top; a sign test over the mentions where only one is right), else
    "calibration"; and the counts that decided."""
    new, old = trees_right, recalibrated_right
    only_new, only_old = int((new & ~old).sum()), int((old & ~new).sum())
    margin = TREES_MARGIN_SIGMAS * math.sqrt(only_new + only_old)
    chosen = "trees" if only_new - only_old > 0 and only_new - only_old >= margin else "calibration"
    return chosen, {"only_trees_right": only_new, "only_recalibrated_right": only_old,
                    "needed": math.ceil(margin) if only_new + only_old else 1}


def split(rows: TrainingRows) -> tuple[TrainingRows, TrainingRows]:
    """(training, held-out): every fifth document held out."""
    held = np.array([d % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for d in rows.mention_doc])
    if held.all() or not held.any():
        raise InputError("tuning needs gold mentions in at least five documents (one in five is held out)")
    return rows.subset(~held), rows.subset(held)


# --- `mel index tune` ----------------------------------------------------------------------


def tune_index(index: str | Path, gold: Sequence[str], linker: FusedLinker, *,
               settings: FitSettings = FitSettings(), refit: str = "auto", report: SkipReport | None = None) -> dict:
    """Fit the reranker and calibration of `index` on `gold` (`refit`: one of REFITS), write them
    into it, and say how it went."""
    if refit not in REFITS:
        raise ValueError(f"refit must be one of {REFITS}, not {refit!r}")
    report = report if report is not None else SkipReport()
    sets = [(path, gold_documents(path, report)) for path in gold]
    fingerprints = gold_fingerprints(m for _, documents in sets for document in documents for m in document.mentions)
    sketch = linker.training_links()
    in_links: list[LinkOverlap] = []
    for path, documents in sets:
        if not any(m.span is not None for document in documents for m in document.mentions):
            raise InputError(f"{display_name(path)}: no linkable gold mentions to tune on{report.why()}")
        if sketch is None:
            continue
        overlap = sketch.overlap(gold_fingerprints(m for document in documents for m in document.mentions))
        in_links.append(overlap)
        if overlap.share >= MAX_LINK_OVERLAP:
            raise InputError(
                f"{display_name(path)}: {100 * overlap.share:.0f}% of its gold mentions ({overlap.found:,} of "
                f"{overlap.checked:,} checked) are training links of {index} (its --links): their own alias counts "
                "and contexts would teach the reranker to trust what new text never has; tune on gold documents "
                "the index was not built from (hold them out of --links)")
    offset, parts = 0, []
    for _, documents in sets:
        parts.append(collect_rows(linker, documents, doc_offset=offset))
        offset += len(documents)
    rows = concatenate(parts)
    train, held = split(rows)
    notes = []
    if refit != "trees" and (fitted_on := trees_fitted_on(linker.reranker, gold, fingerprints, f"{index}'s reranker")):
        notes.append(f"the trees of {index}'s current reranker were fitted on {fitted_on}: recalibrated on it, their "
                     "held-out figures are in-sample (tune a copy of the untuned index, or --refit trees)")
    fitted = {"calibration": recalibrate(linker.reranker, train)}
    if refit != "calibration":
        fitted["trees"] = fit_reranker(train, settings)
    tops = {name: stated_top(reranker, held) for name, reranker in fitted.items()}
    chosen, sign_test = choose_refit(tops["trees"][1], tops["calibration"][1]) if refit == "auto" \
        else (refit, None)
    measured = {name: measure(reranker, held, tops[name]) for name, reranker in fitted.items()}
    held_out = {"before": measure(linker.reranker, held), "after": measured[chosen], "refits": measured}
    meta = {"gold": [str(p) for p in gold], "held_out": held_out, "gold_sketch": sketch_json(fingerprints)}
    final = fit_reranker(rows, settings, meta=meta) if chosen == "trees" else recalibrate(linker.reranker, rows, meta)
    write_reranker(Path(index), final)
    return {"index": str(index), "gold": [str(p) for p in gold], "documents": offset, "mentions": rows.mentions,
            "candidates": int(len(rows.y)), "refit": {"asked": refit, "chosen": chosen, "sign_test": sign_test},
            "held_out": held_out,
            "in_training_links": None if sketch is None else {
                "checked": (total := sum(in_links, LinkOverlap(0, 0, 0))).checked, "found": total.found},
            "skipped": report.to_json(), "notes": notes}


def trees_fitted_on(reranker: Reranker, gold: Sequence[str], fingerprints: np.ndarray, where: str) -> str:
    """What of `gold` (its mentions' fingerprints) the reranker's trees were fitted on, in words
    ("" when none): by the sketch of their gold mentions; a reranker tuned by a mel that kept
    none names its gold files."""
    sketch = reranker.gold_sketches(where).get("trees")
    if sketch is not None:
        overlap = sketch.overlap(fingerprints)
        return f"{overlap.found:,} of the {overlap.checked:,} gold mentions checked" if overlap.found else ""
    return ", ".join(sorted(set(map(str, gold)) & trees_gold(reranker)))


def trees_gold(reranker: Reranker) -> set[str]:
    """The gold files a reranker's trees were fitted on (as given to `mel index tune`)."""
    gold = reranker.trees_meta().get("gold")
    return {str(path) for path in gold} if isinstance(gold, list) else set()


def write_reranker(index: Path, reranker: Reranker) -> None:
    """reranker.json into the index, and its checksum into the manifest (both written atomically)."""
    path = index / RERANKER_FILE
    write_json(path, reranker.to_json())
    manifest_path = index / MANIFEST_FILE
    data = read_json(manifest_path)
    data["reranker"] = {"sha256": sha256_file(path), "created": reranker.meta.get("created"),
                        "refit": reranker.meta.get("refit"),
                        "gold": reranker.meta.get("gold"), "mentions": reranker.meta.get("mentions"),
                        "held_out": reranker.meta.get("held_out"), "tool_versions": reranker.meta.get("tool_versions"),
                        "command": command_line()}
    write_json(manifest_path, data)
