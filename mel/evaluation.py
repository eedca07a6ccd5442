"""`mel eval` and `mel train --eval`: recall@K of a ranking method on gold mentions.

R@K is the share of mentions whose gold QID is among the top K distinct QIDs
(docs/method.md), per language, micro-averaged (over all mentions) and
macro-averaged (the mean of the languages' R@K), and the same split by
Mewsli-9 frequency bin and by `qid_in_refs`. The upper bound is the share of
mentions whose gold QID is in the method's KB at all (the index, or the alias
table's targets).

Gold mentions come from Mewsli-9 folders or mel documents JSON Lines (`mel.gold`),
one document at a time, and flow through the one streaming pipeline
(`mel.pipeline`), so memory is flat in the number of mentions.

One rule for mentions that cannot be linked (text missing, span not spelling
the mention): they count as misses (and the report says how many and why), or
are left out of every count with `skip_bad`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mel import __version__
from mel.artifacts import command_line, sha256_file, tool_versions
from mel.confidence import NilCounts, Reliability
from mel.errors import InputError
from mel.gold import (
    MAX_EXAMPLES,
    EvalDocument,
    EvalMention,
    SourceNotes,
    gold_fingerprints,
    jsonl_documents,
    mewsli_documents,
    resolve_mewsli,
)
from mel.link_sketch import LinkOverlap, LinkSketch
from mel.mentions import MentionSpan
from mel.mewsli import mentions_checksums
from mel.pipeline import run_stream
from mel.rankers import Ranker, Ranking
from mel.skips import SkipReport
from mel.streams import display_name, is_stdio

REPORT_FORMAT = "mel.eval.v1"
DEFAULT_KS = (1, 10, 100)
# Mewsli-9's freq_bin: how often Botha et al.'s training set links the entity.
FREQ_BINS = {"0": "0 (unseen)", "1": "1-9", "2": "10-99", "3": "100-999", "4": "1,000-9,999", "5": "10,000+"}


# --- counting -----------------------------------------------------------------


@dataclass
class GroupCounts:
    mentions: int = 0
    in_kb: int = 0
    bad: int = 0
    hits: list[int] = field(default_factory=list)


class Tally:
    """Hits at each K per (split, value, language); splits: "all", "freq_bin", "qid_in_refs"."""

    def __init__(self, ks: Sequence[int]):
        self.ks = tuple(ks)
        self.groups: dict[tuple[str, str, str], GroupCounts] = {}

    def _group(self, split: str, value: str, lang: str) -> GroupCounts:
        key = (split, value, lang)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = GroupCounts(hits=[0] * len(self.ks))
        return group

    def add(self, mention: EvalMention, position: int, in_kb: bool) -> None:
        """`position`: the gold QID's rank (0 = first), -1 when it is not among the candidates."""
        keys = [("all", "", mention.lang)]
        if mention.freq_bin is not None:
            keys.append(("freq_bin", str(mention.freq_bin), mention.lang))
        if mention.qid_in_refs is not None:
            keys.append(("qid_in_refs", str(mention.qid_in_refs), mention.lang))
        for key in keys:
            group = self._group(*key)
            group.mentions += 1
            group.in_kb += bool(in_kb)
            group.bad += mention.problem is not None
            if position >= 0:
                for i, k in enumerate(self.ks):
                    if position < k:
                        group.hits[i] += 1

    @property
    def mentions(self) -> int:
        return sum(g.mentions for (split, _, _), g in self.groups.items() if split == "all")

    def values(self, split: str) -> list[str]:
        found = {value for (s, value, _) in self.groups if s == split}
        return sorted(found, key=lambda v: (len(v), v))

    def recall_table(self, split: str = "all", value: str = "") -> dict:
        """{"<lang>": {...}, "micro": {...}, "macro": {...}} for one split value."""
        by_lang = {lang: g for (s, v, lang), g in sorted(self.groups.items()) if s == split and v == value}
        out: dict[str, dict] = {lang: self._row(g) for lang, g in by_lang.items()}
        if not by_lang:
            return out
        total = GroupCounts(hits=[0] * len(self.ks))
        for g in by_lang.values():
            total.mentions += g.mentions
            total.in_kb += g.in_kb
            total.bad += g.bad
            total.hits = [a + b for a, b in zip(total.hits, g.hits)]
        out["micro"] = self._row(total)
        rows = [out[lang] for lang, g in by_lang.items() if g.mentions]
        macro: dict = {"languages": len(rows), "mentions": total.mentions}
        for k in self.ks:
            macro[f"R@{k}"] = float(np.mean([r[f"R@{k}"] for r in rows])) if rows else 0.0
        out["macro"] = macro
        return out

    def _row(self, g: GroupCounts) -> dict:
        row: dict = {"mentions": g.mentions}
        for k, hits in zip(self.ks, g.hits):
            row[f"R@{k}"] = hits / g.mentions if g.mentions else 0.0
        row["hits"] = {str(k): hits for k, hits in zip(self.ks, g.hits)}
        if g.bad:
            row["unlinkable_counted_as_misses"] = g.bad
        return row

    def upper_bound(self) -> dict:
        by_lang = {lang: g for (s, _, lang), g in sorted(self.groups.items()) if s == "all"}
        out: dict[str, dict] = {}
        for lang, g in by_lang.items():
            out[lang] = {"mentions": g.mentions, "in_kb": g.in_kb, "share": g.in_kb / g.mentions if g.mentions else 0.0}
        if by_lang:
            mentions = sum(g.mentions for g in by_lang.values())
            in_kb = sum(g.in_kb for g in by_lang.values())
            out["micro"] = {"mentions": mentions, "in_kb": in_kb, "share": in_kb / mentions if mentions else 0.0}
            shares = [row["share"] for lang, row in out.items() if lang != "micro" and row["mentions"]]
            out["macro"] = {"languages": len(shares), "share": float(np.mean(shares)) if shares else 0.0}
        return out


@dataclass
class Unlinkable:
    """Mentions that could not be linked (missing text, span not matching)."""

    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, mention: EvalMention) -> None:
        self.count += 1
        kind = mention.problem.kind.value if mention.problem is not None else "unknown"
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{mention.location}: {mention.problem}")


# --- running ------------------------------------------------------------------


@dataclass
class EvalOutcome:
    tally: Tally
    unlinkable: Unlinkable
    excluded_unlinkable: bool
    seconds: float
    ranked: int = 0  # mentions actually ranked (linkable)
    reliability: Reliability | None = None  # when the ranker gives probabilities
    nil: NilCounts | None = None
    in_training_links: LinkOverlap | None = None  # when the index keeps a sketch of its --links
    in_reranker_gold: dict[str, LinkOverlap] = field(default_factory=dict)  # trees, calibration: when kept

    @property
    def mentions(self) -> int:
        return self.tally.mentions


def gold_positions(ranked: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Rank of each gold QID in its row of distinct QIDs, -1 when absent."""
    if len(gold) == 0:
        return np.zeros(0, dtype=np.int64)
    match = ranked == gold[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def _linkable_spans(documents: Sequence[EvalDocument]) -> list[MentionSpan]:
    return [dataclasses.replace(m.span, doc=number) for number, document in enumerate(documents)
            for m in document.mentions if m.span is not None]


class _Counter:
    """The consume stage: every mention into the tally (or the unlinkable count)."""

    def __init__(self, ranker: Ranker, tally: Tally, unlinkable: Unlinkable, skip_bad: bool,
                 progress: Callable[[int, str], None] | None, min_prob: float):
        self.ranker, self.tally, self.unlinkable, self.skip_bad = ranker, tally, unlinkable, skip_bad
        self.progress = progress
        training_links = getattr(ranker, "training_links", None)  # not part of the Ranker protocol
        self.sketch: LinkSketch | None = training_links() if training_links is not None else None
        self.in_links = LinkOverlap(0, 0, 0)
        gold_sketches = getattr(ranker, "gold_sketches", None)  # the fused linker's: what it was tuned on
        self.reranker_gold: dict[str, LinkSketch] = gold_sketches() if gold_sketches is not None else {}
        self.in_reranker_gold = {part: LinkOverlap(0, 0, 0) for part in self.reranker_gold}
        self.done = self.ranked = 0
        self.reliability = Reliability()
        self.nil = NilCounts(threshold=min_prob)
        self.probabilities = False

    def __call__(self, documents: list[EvalDocument], ranking: Ranking) -> bool:
        mentions = [m for document in documents for m in document.mentions]
        usable = [m for m in mentions if m.span is not None]
        gold = np.fromiter((m.gold for m in usable), dtype=np.int64, count=len(usable))
        if usable and (self.sketch is not None or self.reranker_gold):
            fingerprints = gold_fingerprints(usable)
            if self.sketch is not None:
                self.in_links += self.sketch.overlap(fingerprints)
            for part, sketch in self.reranker_gold.items():
                self.in_reranker_gold[part] += sketch.overlap(fingerprints)
        positions = iter(gold_positions(ranking.qids, gold).tolist())
        counted = [m for m in mentions if m.span is not None or not self.skip_bad]
        known = self.ranker.in_kb(np.fromiter((m.gold for m in counted), dtype=np.int64, count=len(counted)))
        in_kb = iter(known.tolist())
        if ranking.probabilities and len(usable):
            self.probabilities = True
            top, probability = ranking.qids[:, 0], np.where(ranking.qids[:, 0] >= 0, ranking.scores[:, 0], 0.0)
            self.reliability.add(probability, top == gold)
            usable_known = self.ranker.in_kb(gold)
            self.nil.add(top, probability, gold, usable_known)
        if ranking.probabilities and len(counted) > len(usable):  # unlinkable mentions stay NIL
            bad = np.array([m.gold for m in counted if m.span is None], dtype=np.int64)
            self.nil.add(np.full(len(bad), -1), np.zeros(len(bad)), bad, self.ranker.in_kb(bad))
        for mention in mentions:
            if mention.span is None:
                self.unlinkable.add(mention)
                if self.skip_bad:
                    continue
            self.tally.add(mention, next(positions) if mention.span is not None else -1, next(in_kb))
        self.ranked += len(usable)
        self.done += len(mentions)
        if self.progress is not None and mentions:
            self.progress(self.done, mentions[-1].lang)
        return True


def evaluate(documents: Iterable[EvalDocument], ranker: Ranker, ks: Sequence[int] = DEFAULT_KS, *,
             skip_bad: bool = False, chunk_size: int = 1024, min_prob: float = 0.0,
             progress: Callable[[int, str], None] | None = None) -> EvalOutcome:
    """Rank every mention with `ranker` and count hits at each K (and, when the ranker gives
    probabilities, the calibration and the NIL-aware scores at `min_prob`)."""
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise InputError("every K must be a positive integer")
    tally, unlinkable = Tally(ks), Unlinkable()
    counter = _Counter(ranker, tally, unlinkable, skip_bad, progress, min_prob)
    started = time.perf_counter()
    run_stream(documents, units=lambda document: len(document.mentions),
               prepare=lambda group: ranker.prepare(_linkable_spans(group)),
               rank=lambda prepared: ranker.rank(prepared, ks[-1]), consume=counter, chunk_size=chunk_size,
               encode=getattr(ranker, "encode_stage", None))
    return EvalOutcome(tally, unlinkable, skip_bad, time.perf_counter() - started, counter.ranked,
                       counter.reliability if counter.probabilities else None,
                       counter.nil if counter.probabilities else None,
                       counter.in_links if counter.sketch is not None else None, counter.in_reranker_gold)


# --- the report ---------------------------------------------------------------


def mewsli_dataset_record(root: Path, langs: Sequence[str], check_md5: bool) -> dict:
    return {"kind": "mewsli9", "path": str(root.resolve()), "languages": list(langs),
            "mentions_sha256": mentions_checksums(root, langs), "check_md5": check_md5}


def jsonl_dataset_record(path: str, langs: Sequence[str] | None) -> dict:
    return {"kind": "jsonl", "path": "-" if is_stdio(path) else str(Path(path).resolve()),
            "sha256": None if is_stdio(path) else sha256_file(path), "languages": list(langs) if langs else None}


def build_report(outcome: EvalOutcome, *, method: str, ranker: Ranker, dataset: dict, parameters: dict,
                 report: SkipReport, notes: SourceNotes) -> dict:
    """The JSON report: results, splits, upper bound, and what it takes to reproduce them."""
    tally = outcome.tally
    unlinkable = outcome.unlinkable
    out = {
        "format": REPORT_FORMAT,
        "method": method,
        "parameters": {"ks": list(tally.ks), "skip_bad": outcome.excluded_unlinkable, **parameters},
        "dataset": dataset,
        **ranker.describe(),
        "results": tally.recall_table(),
        "upper_bound": tally.upper_bound(),
        "by_freq_bin": {value: tally.recall_table("freq_bin", value) for value in tally.values("freq_bin")},
        "freq_bins": FREQ_BINS,
        "by_qid_in_refs": {value: tally.recall_table("qid_in_refs", value) for value in tally.values("qid_in_refs")},
        "unlinkable_mentions": {
            "count": unlinkable.count,
            "treatment": "excluded (--skip-bad)" if outcome.excluded_unlinkable else "counted as misses",
            "by_kind": unlinkable.by_kind, "examples": unlinkable.examples},
        "source": {"documents": notes.documents, "text_md5_mismatches": notes.md5_mismatches,
                   "text_md5_examples": notes.md5_examples, "mentions_without_gold": notes.without_gold,
                   **report.to_json()},
        "calibration": outcome.reliability.to_json() if outcome.reliability is not None else None,
        "nil": outcome.nil.to_json() if outcome.nil is not None else None,
        "in_training_links": None if (links := outcome.in_training_links) is None else {
            "checked": links.checked, "found": links.found},
        "in_reranker_gold": {part: {"checked": overlap.checked, "found": overlap.found}
                             for part, overlap in outcome.in_reranker_gold.items()} or None,
        "notes": list(ranker.notes),
        "timing": {"seconds": round(outcome.seconds, 3), "mentions": outcome.mentions,
                   "mentions_per_s": round(outcome.mentions / outcome.seconds, 1) if outcome.seconds > 0 else None},
        "mel_version": __version__,
        "tool_versions": tool_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command_line(),
    }
    if links is not None and links.found:
        out["notes"].append(
            f"{links.found:,} of {links.checked:,} gold mentions checked are training links of the index (--links at "
            "build): they find their own alias counts and contexts there, so these figures are in-sample; evaluate "
            "on documents held out of --links")
    if fitted := [f"its {part} on {o.found:,} of the {o.checked:,} gold mentions checked"
                  for part, o in outcome.in_reranker_gold.items() if o.found]:
        out["notes"].append(f"the reranker was fitted on these documents ({'; '.join(fitted)}): these figures are "
                            "in-sample; evaluate on documents it was not fitted on")
    if unlinkable.count and not outcome.excluded_unlinkable:
        out["notes"].append(f"{unlinkable.count} mention(s) could not be linked (missing text or span not matching) "
                            "and count as misses; --skip-bad leaves them out")
    return out


def run_mewsli_eval(path: str, ranker: Ranker, method: str, *, langs: Sequence[str] | None = None,
                    ks: Sequence[int] = DEFAULT_KS, skip_bad: bool = False, check_md5: bool = True,
                    parameters: dict | None = None, report: SkipReport | None = None, min_prob: float = 0.0,
                    progress: Callable[[int, str], None] | None = None) -> dict:
    """`mel eval mewsli9`: the report for a Mewsli-9 dataset folder."""
    root, langs = resolve_mewsli(path, langs)
    dataset = mewsli_dataset_record(root, langs, check_md5)
    report = report if report is not None else SkipReport(max_examples=MAX_EXAMPLES)
    notes = SourceNotes()
    outcome = evaluate(mewsli_documents(root, langs, report=report, notes=notes, check_md5=check_md5), ranker, ks,
                       skip_bad=skip_bad, min_prob=min_prob, progress=progress)
    if outcome.mentions == 0 and outcome.unlinkable.count == 0:
        raise InputError(f"{path}: no usable mentions{report.why()}")
    return build_report(outcome, method=method, ranker=ranker, dataset=dataset, parameters=parameters or {},
                        report=report, notes=notes)


def run_jsonl_eval(path: str, ranker: Ranker, method: str, *, langs: Sequence[str] | None = None,
                   ks: Sequence[int] = DEFAULT_KS, parameters: dict | None = None, report: SkipReport | None = None,
                   min_prob: float = 0.0, progress: Callable[[int, str], None] | None = None) -> dict:
    """`mel eval jsonl`: the report for mel documents whose mentions carry gold QIDs."""
    dataset = jsonl_dataset_record(path, langs)
    report = report if report is not None else SkipReport(max_examples=MAX_EXAMPLES)
    notes = SourceNotes()
    outcome = evaluate(jsonl_documents(path, langs, report=report, notes=notes), ranker, ks, min_prob=min_prob,
                       progress=progress)
    if outcome.mentions == 0:
        raise InputError(f"{display_name(path)}: no mentions with a gold qid to evaluate{report.why()}")
    return build_report(outcome, method=method, ranker=ranker, dataset=dataset, parameters=parameters or {},
                        report=report, notes=notes)
