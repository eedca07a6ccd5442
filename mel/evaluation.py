"""`mel eval`: recall@K of a ranking method on Mewsli-9 or on mel documents with gold QIDs.

R@K is the share of mentions whose gold QID is among the top K distinct QIDs
(docs/method.md), per language, micro-averaged (over all mentions) and
macro-averaged (the mean of the languages' R@K), and the same split by
Mewsli-9 frequency bin and by `qid_in_refs`. The upper bound is the share of
mentions whose gold QID is in the method's KB at all (the index, or the alias
table's targets).

Mentions are streamed (one Mewsli-9 document, or one JSON line, at a time)
and ranked in chunks; a reader thread reads, checks and tokenises the next
chunk while the main thread encodes and searches the current one, so memory
is flat in the number of mentions.

A Mewsli-9 mention whose text file is missing or whose span does not spell
the mention cannot be linked: it is counted as a miss (and the report says
how many), or left out of every count with `skip_bad`.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from mel import __version__
from mel.artifacts import command_line, sha256_file, tool_versions
from mel.documents import BadRecord, read_documents
from mel.errors import InputError
from mel.mentions import MentionSpan
from mel.mewsli import iter_document_runs, mentions_checksums, mewsli_languages
from mel.records import qid_to_int
from mel.streams import SkipReport, display_name, is_stdio

REPORT_FORMAT = "mel.eval.v1"
DEFAULT_KS = (1, 10, 100)
# Mewsli-9's freq_bin: how often Botha et al.'s training set links the entity.
FREQ_BINS = {"0": "0 (unseen)", "1": "1-9", "2": "10-99", "3": "100-999", "4": "1,000-9,999", "5": "10,000+"}
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class EvalMention:
    """A gold mention to rank: `span` is None when it cannot be linked (`problem` says why)."""

    lang: str
    gold: int  # the gold QID's number
    span: MentionSpan | None
    freq_bin: int | None = None
    qid_in_refs: bool | None = None
    problem: str | None = None
    location: str = ""


# --- sources ------------------------------------------------------------------


def resolve_mewsli(path: str | os.PathLike, langs: Sequence[str] | None) -> tuple[Path, list[str]]:
    """(dataset root, languages): DIR is Mewsli-9's output/dataset or one of its language folders."""
    folder = Path(path)
    if (folder / "mentions.tsv").is_file():
        root, available = folder.parent, [folder.name]
    else:
        root, available = folder, mewsli_languages(folder)
    if not langs:
        return root, available
    missing = [lang for lang in langs if lang not in available]
    if missing:
        raise InputError(f"{folder}: no mentions for language(s) {', '.join(missing)} "
                         f"(found {', '.join(available)})")
    return root, list(dict.fromkeys(langs))


@dataclass
class SourceNotes:
    """What reading the data found besides the mentions (for the report)."""

    documents: int = 0
    md5_mismatches: int = 0
    md5_examples: list[str] = field(default_factory=list)
    without_gold: int = 0


def mewsli_mentions(root: Path, langs: Sequence[str], *, report: SkipReport, notes: SourceNotes,
                    check_md5: bool = True) -> Iterator[EvalMention]:
    """Every mention of the languages, document by document (streamed)."""
    for lang in langs:
        tsv = root / lang / "mentions.tsv"
        for document in iter_document_runs(root, lang, report=report, check_md5=check_md5):
            notes.documents += 1
            if document.text is not None and document.problem is not None:
                notes.md5_mismatches += 1
                if len(notes.md5_examples) < MAX_EXAMPLES:
                    notes.md5_examples.append(f"{root / lang / 'text' / document.docid}: {document.problem}")
            for m in document.mentions:
                usable = m.problem is None
                yield EvalMention(
                    lang=lang, gold=qid_to_int(m.qid),
                    span=MentionSpan(document.text, m.position, m.end) if usable else None,
                    freq_bin=m.freq_bin, qid_in_refs=m.qid_in_refs, problem=m.problem, location=f"{tsv}:{m.row}")


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def jsonl_mentions(path: str | os.PathLike, langs: Sequence[str] | None, *, report: SkipReport,
                   notes: SourceNotes) -> Iterator[EvalMention]:
    """Mentions with a gold QID of mel documents; `freq_bin` and `qid_in_refs`
    are taken from a mention's fields when it has them. A document without
    "lang" is counted under "und"."""
    name = display_name(path)
    wanted = set(langs) if langs else None
    for item in read_documents(path):
        if isinstance(item, BadRecord):
            report.skip(f"{name}:{item.line_no}", item.reason)
            continue
        lang = item.lang or "und"
        if wanted is not None and lang not in wanted:
            report.filter(f"document in language {lang!r} (not selected)")
            continue
        notes.documents += 1
        raw_mentions = item.raw.get("mentions") if not item.inline else None
        for number, mention in enumerate(item.mentions):
            if mention.gold_qid is None:
                notes.without_gold += 1
                report.filter("mention without a gold qid (not evaluated)")
                continue
            raw = raw_mentions[number] if isinstance(raw_mentions, list) else {}
            in_refs = raw.get("qid_in_refs")
            yield EvalMention(
                lang=lang, gold=qid_to_int(mention.gold_qid), span=MentionSpan(item.text, mention.start, mention.end),
                freq_bin=_optional_int(raw.get("freq_bin")),
                qid_in_refs=in_refs if isinstance(in_refs, bool) else None,
                location=f"{name}:{item.line_no}: mention {number + 1}")


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


def problem_kind(problem: str) -> str:
    """A problem message (mel.mewsli) -> its category, for counts."""
    for prefix, kind in (("text at ", "span does not match the text"), ("span ", "span outside the text"),
                         ("text is not valid UTF-8", "text is not valid UTF-8"),
                         ("docid ", "docid is not a file name")):
        if problem.startswith(prefix):
            return kind
    return problem


@dataclass
class Unlinkable:
    """Mentions that could not be linked (missing text, span not matching)."""

    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, mention: EvalMention) -> None:
        self.count += 1
        kind = problem_kind(mention.problem or "")
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{mention.location}: {mention.problem}")


# --- running ------------------------------------------------------------------


_END = object()


def _background(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate `items` in a thread, `depth` ahead; its exceptions surface here."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    box.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=produce, name="mel-eval-read", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
    if failure:
        raise failure[0]


@dataclass
class EvalOutcome:
    tally: Tally
    unlinkable: Unlinkable
    excluded_unlinkable: bool
    seconds: float
    ranked: int = 0  # mentions actually ranked (linkable)

    @property
    def mentions(self) -> int:
        return self.tally.mentions


def _chunks(mentions: Iterable[EvalMention], ranker, chunk_size: int) -> Iterator[tuple[list, list, object]]:
    """(all mentions, linkable mentions, prepared queries) per chunk."""
    chunk: list[EvalMention] = []
    for mention in mentions:
        chunk.append(mention)
        if len(chunk) >= chunk_size:
            usable = [m for m in chunk if m.span is not None]
            yield chunk, usable, ranker.prepare([m.span for m in usable])
            chunk = []
    if chunk:
        usable = [m for m in chunk if m.span is not None]
        yield chunk, usable, ranker.prepare([m.span for m in usable])


def gold_positions(ranked: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Rank of each gold QID in its row of distinct QIDs, -1 when absent."""
    if len(gold) == 0:
        return np.zeros(0, dtype=np.int64)
    match = ranked == gold[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


def evaluate(mentions: Iterable[EvalMention], ranker, ks: Sequence[int] = DEFAULT_KS, *, skip_bad: bool = False,
             chunk_size: int = 1024, progress: Callable[[int, str], None] | None = None) -> EvalOutcome:
    """Rank every mention with `ranker` and count hits at each K."""
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise InputError("every K must be a positive integer")
    tally, unlinkable = Tally(ks), Unlinkable()
    started = time.perf_counter()
    done = ranked_count = 0
    for chunk, usable, prepared in _background(_chunks(mentions, ranker, chunk_size)):
        ranked = ranker.rank(prepared, ks[-1])
        gold = np.fromiter((m.gold for m in usable), dtype=np.int64, count=len(usable))
        positions = dict(zip(map(id, usable), gold_positions(ranked, gold).tolist()))
        ranked_count += len(usable)
        counted = [m for m in chunk if m.span is not None or not skip_bad]
        in_kb = ranker.in_kb(np.fromiter((m.gold for m in counted), dtype=np.int64, count=len(counted)))
        for mention, known in zip(counted, in_kb.tolist()):
            tally.add(mention, positions.get(id(mention), -1), known)
        for mention in chunk:
            if mention.span is None:
                unlinkable.add(mention)
        done += len(chunk)
        if progress is not None:
            progress(done, chunk[-1].lang)
    return EvalOutcome(tally, unlinkable, skip_bad, time.perf_counter() - started, ranked_count)


# --- the report ---------------------------------------------------------------


def mewsli_dataset_record(root: Path, langs: Sequence[str], check_md5: bool) -> dict:
    return {"kind": "mewsli9", "path": str(root.resolve()), "languages": list(langs),
            "mentions_sha256": mentions_checksums(root, langs), "check_md5": check_md5}


def jsonl_dataset_record(path: str, langs: Sequence[str] | None) -> dict:
    return {"kind": "jsonl", "path": "-" if is_stdio(path) else str(Path(path).resolve()),
            "sha256": None if is_stdio(path) else sha256_file(path), "languages": list(langs) if langs else None}


def build_report(outcome: EvalOutcome, *, method: str, ranker, dataset: dict, parameters: dict,
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
        "notes": list(getattr(ranker, "notes", [])),
        "timing": {"seconds": round(outcome.seconds, 3), "mentions": outcome.mentions,
                   "mentions_per_s": round(outcome.mentions / outcome.seconds, 1) if outcome.seconds > 0 else None},
        "mel_version": __version__,
        "tool_versions": tool_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
    }
    if unlinkable.count and not outcome.excluded_unlinkable:
        out["notes"].append(f"{unlinkable.count} mention(s) could not be linked (missing text or span not matching) "
                            "and count as misses; --skip-bad leaves them out")
    return out


def run_mewsli_eval(path: str, ranker, method: str, *, langs: Sequence[str] | None = None,
                    ks: Sequence[int] = DEFAULT_KS, skip_bad: bool = False, check_md5: bool = True,
                    parameters: dict | None = None, report: SkipReport | None = None,
                    progress: Callable[[int, str], None] | None = None) -> dict:
    """`mel eval mewsli9`: the report for a Mewsli-9 dataset folder."""
    root, langs = resolve_mewsli(path, langs)
    dataset = mewsli_dataset_record(root, langs, check_md5)
    report = report if report is not None else SkipReport(max_examples=MAX_EXAMPLES)
    notes = SourceNotes()
    outcome = evaluate(mewsli_mentions(root, langs, report=report, notes=notes, check_md5=check_md5), ranker, ks,
                       skip_bad=skip_bad, progress=progress)
    if outcome.mentions == 0 and outcome.unlinkable.count == 0:
        raise InputError(f"{path}: no usable mentions (see the report above)")
    return build_report(outcome, method=method, ranker=ranker, dataset=dataset, parameters=parameters or {},
                        report=report, notes=notes)


def run_jsonl_eval(path: str, ranker, method: str, *, langs: Sequence[str] | None = None,
                   ks: Sequence[int] = DEFAULT_KS, parameters: dict | None = None, report: SkipReport | None = None,
                   progress: Callable[[int, str], None] | None = None) -> dict:
    """`mel eval jsonl`: the report for mel documents whose mentions carry gold QIDs."""
    dataset = jsonl_dataset_record(path, langs)
    report = report if report is not None else SkipReport(max_examples=MAX_EXAMPLES)
    notes = SourceNotes()
    outcome = evaluate(jsonl_mentions(path, langs, report=report, notes=notes), ranker, ks, progress=progress)
    if outcome.mentions == 0:
        raise InputError(f"{display_name(path)}: no mentions with a gold qid to evaluate")
    return build_report(outcome, method=method, ranker=ranker, dataset=dataset, parameters=parameters or {},
                        report=report, notes=notes)
