"""`mel link`: documents in, QID links out, streamed through the ranker.

Documents flow through the one streaming pipeline (`mel.pipeline`): the reader
parses lines and tokenises each chunk's mentions, the calling thread ranks them
(encode and search), the consumer writes the output records, all at once and in
input order, with flat memory for any corpus.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from mel.documents import BadRecord, error_record, output_record, read_documents
from mel.errors import InputError, RecordError
from mel.linker.features import FEATURES, VIEW_BITS
from mel.mentions import MentionSpan
from mel.pipeline import run_stream
from mel.qids import qid_to_str
from mel.rankers import Ranker, Ranking
from mel.records import Candidate, Document, Prediction
from mel.streams import JsonlWriter, encode_line


class StrictStop(InputError):
    """--strict: a bad input record stops the run."""

    exit_code = 3


@dataclass
class LinkStats:
    documents: int = 0
    mentions: int = 0
    linked: int = 0
    nil: int = 0
    errors: int = 0
    error_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    broken_pipe: bool = False
    # Wall seconds each stage was busy (they overlap; see bench/bench_link.py).
    stage_seconds: dict[str, float] = field(default_factory=lambda: {
        "read_tokenize": 0.0, "encode": 0.0, "search": 0.0, "write": 0.0})

    def summary(self) -> str:
        rate = self.mentions / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.documents:,} documents, {self.mentions:,} mentions, {self.linked:,} linked, "
                f"{self.nil:,} NIL, {self.errors:,} errors in {self.seconds:.1f}s ({rate:,.0f} mentions/s)")


@dataclass(frozen=True)
class LinkOptions:
    top_k: int = 10
    min_score: float | None = None
    min_prob: float | None = None  # NIL below this probability (rankers that give probabilities)
    strict: bool = False
    chunk_size: int = 1024  # mentions per chunk (several encoder batches)
    max_error_lines: int = 20


def _spans(items: Iterable[Document | BadRecord]) -> list[MentionSpan]:
    return [MentionSpan(item.text, m.start, m.end, item.lang, doc)
            for doc, item in enumerate(items) if isinstance(item, Document) for m in item.mentions]


def _views(bits: int) -> tuple[str, ...]:
    return tuple(view for view, bit in VIEW_BITS.items() if bits & bit)


def predictions(ranking: Ranking, rows: range, min_score: float | None, min_prob: float | None = None
                ) -> list[Prediction]:
    """The answer for each of `rows`: candidates best first; NIL below `min_score` (or `min_prob`)."""
    threshold = min_score if min_prob is None else max(min_prob, min_score or 0.0)
    out = []
    for r in rows:
        candidates = []
        for c, (q, s) in enumerate(zip(ranking.qids[r].tolist(), ranking.scores[r].tolist())):
            if q < 0:
                continue
            views = _views(int(ranking.views[r, c])) if ranking.views is not None else None
            features = dict(zip(FEATURES, ranking.features[r, c].tolist())) if ranking.features is not None else None
            candidates.append(Candidate(qid_to_str(q), s, views, features))
        prediction = Prediction.from_candidates(candidates)
        if threshold is not None and prediction.score is not None and prediction.score < threshold:
            prediction = Prediction(qid=None, score=prediction.score, candidates=prediction.candidates)
        out.append(prediction)
    return out


class _Writer:
    """The consume stage: output records in input order, counted into the stats."""

    def __init__(self, writer: JsonlWriter, errors: JsonlWriter | None, options: LinkOptions, stats: LinkStats,
                 progress: Callable[[LinkStats], None] | None):
        self.writer, self.errors, self.options, self.stats, self.progress = writer, errors, options, stats, progress

    def __call__(self, items: list[Document | BadRecord], ranking: Ranking) -> bool:
        stats, row = self.stats, 0
        for item in items:
            if isinstance(item, BadRecord):
                ok = self._bad(item.message, error_record(item), item.line_no)
            else:
                answers = predictions(ranking, range(row, row + len(item.mentions)), self.options.min_score,
                                      self.options.min_prob)
                row += len(item.mentions)
                try:
                    line = encode_line(output_record(item, answers))
                except RecordError as exc:  # one record never ends a run
                    ok = self._bad(f"line {item.line_no}: {exc}", {"id": item.id}, item.line_no, str(exc))
                    if not ok:
                        return False
                    continue
                stats.documents += 1
                stats.mentions += len(answers)
                linked = sum(p.qid is not None for p in answers)
                stats.linked += linked
                stats.nil += len(answers) - linked
                ok = self.writer.write(line)
            if not ok:
                return False
        if self.progress:
            self.progress(stats)
        return True

    def _bad(self, message: str, record: dict, line_no: int | None, reason: str | None = None) -> bool:
        """Count a bad record and write it (to --errors when given)."""
        stats = self.stats
        stats.errors += 1
        if len(stats.error_lines) < self.options.max_error_lines:
            stats.error_lines.append(message)
        if reason is not None:
            record = {**record, "error": reason}
        try:
            line = encode_line(record)
        except RecordError as exc:
            line = encode_line({"line": line_no, "error": f"{record.get('error')}; {exc}"})
        return (self.errors or self.writer).write(line)


def _checked(source: Iterator[Document | BadRecord], strict: bool) -> Iterator[Document | BadRecord]:
    for item in source:
        if strict and isinstance(item, BadRecord):
            raise StrictStop(f"{item.message} (stopped: --strict)")
        yield item


def link_documents(source: str, ranker: Ranker, writer: JsonlWriter, *, errors: JsonlWriter | None = None,
                   options: LinkOptions = LinkOptions(), progress: Callable[[LinkStats], None] | None = None
                   ) -> LinkStats:
    """Link every document of `source` (a path or "-") and write the output records in input order."""
    stats = LinkStats()
    started = time.perf_counter()
    outcome = run_stream(
        _checked(read_documents(source), options.strict),
        units=lambda item: len(item.mentions) if isinstance(item, Document) else 0,
        prepare=lambda items: ranker.prepare(_spans(items)),
        rank=lambda prepared: ranker.rank(prepared, options.top_k),
        consume=_Writer(writer, errors, options, stats, progress),
        chunk_size=options.chunk_size, encode=getattr(ranker, "encode_stage", None))
    stats.broken_pipe = outcome.stopped
    stats.seconds = time.perf_counter() - started
    ranked = getattr(ranker, "seconds", None) or {"encode": outcome.times.rank, "search": 0.0}
    stats.stage_seconds.update(read_tokenize=outcome.times.prepare, write=outcome.times.consume, **ranked)
    return stats


def run_link(source: str, ranker: Ranker, output: str = "-", *, errors_path: str | None = None,
             options: LinkOptions = LinkOptions(), progress: Callable[[LinkStats], None] | None = None) -> LinkStats:
    """`mel link`: link `source` with `ranker` into `output` (atomically for files)."""
    errors = JsonlWriter(errors_path) if errors_path else None
    try:
        with JsonlWriter(output) as writer:
            stats = link_documents(source, ranker, writer, errors=errors, options=options, progress=progress)
            if errors is not None:
                errors.close()  # first: should it fail, the output is dropped, not left looking complete
    except BaseException:
        if errors is not None:
            errors.abort()
        raise
    stats.broken_pipe = stats.broken_pipe or writer.broken_pipe
    return stats
