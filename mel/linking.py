"""`mel link`: documents in, QID links out, streamed through the ranker.

Documents flow through the one streaming pipeline (`mel.pipeline`): the reader
parses lines and tokenises each chunk's mentions, a ranking thread ranks them
(encode and search), the caller takes the output records, all in input order,
with flat memory for any corpus. `link_chunks` is that stream of output records
(`LinkedRecord`: the record `mel link` writes, and what it counts for); the Python
API (`mel.Linker`), `run_link` (files in, one file out), sharded runs
(`mel.link_runs`) and the Ray engine all link through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mel.documents import BadRecord, error_record, output_record, read_documents
from mel.errors import InputError, RecordError
from mel.linker.features import FEATURES, VIEW_BITS
from mel.mentions import MentionSpan
from mel.pipeline import StreamOutcome, iter_stream
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
    max_error_lines: int = 20
    # Wall seconds each stage was busy (they overlap; see bench/bench_link.py).
    stage_seconds: dict[str, float] = field(default_factory=lambda: {
        "read_tokenize": 0.0, "encode": 0.0, "search": 0.0, "write": 0.0})

    def add(self, linked: LinkedRecord) -> None:
        """Count one output record."""
        if linked.error is not None:
            self.errors += 1
            if len(self.error_lines) < self.max_error_lines:
                self.error_lines.append(linked.error)
            return
        self.documents += 1
        self.mentions += linked.mentions
        self.linked += linked.linked
        self.nil += linked.mentions - linked.linked

    def summary(self) -> str:
        rate = self.mentions / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.documents:,} documents, {self.mentions:,} mentions, {self.linked:,} linked, "
                f"{self.nil:,} NIL, {self.errors:,} errors in {self.seconds:.1f}s ({rate:,.0f} mentions/s)")


@dataclass(frozen=True)
class LinkedRecord:
    """One output record of `mel link` (`record`), and what it counts for: a bad input record's
    message (`error`), or the document's mentions and how many of them got a QID. `line` is the
    record as `mel link` writes it (one JSON line)."""

    record: dict
    line: bytes
    error: str | None = None
    mentions: int = 0
    linked: int = 0


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


def _linked(items: list[Document | BadRecord], ranking: Ranking, options: LinkOptions) -> list[LinkedRecord]:
    out, row = [], 0
    for item in items:
        if isinstance(item, BadRecord):
            out.append(_bad(item.message, error_record(item), item.line_no))
            continue
        answers = predictions(ranking, range(row, row + len(item.mentions)), options.min_score, options.min_prob)
        row += len(item.mentions)
        record = output_record(item, answers)
        try:
            line = encode_line(record)
        except RecordError as exc:  # one record never ends a run
            out.append(_bad(f"line {item.line_no}: {exc}", {"id": item.id, "error": str(exc)}, item.line_no))
            continue
        out.append(LinkedRecord(record, line, mentions=len(answers), linked=sum(p.qid is not None for p in answers)))
    return out


def _bad(message: str, record: dict, line_no: int | None) -> LinkedRecord:
    """The output record of a bad input record (or of a record that cannot be written back)."""
    try:
        line = encode_line(record)
    except RecordError as exc:
        record = {"line": line_no, "error": f"{record.get('error')}; {exc}"}
        line = encode_line(record)
    return LinkedRecord(record, line, error=message)


def _checked(source: Iterable[Document | BadRecord], strict: bool) -> Iterator[Document | BadRecord]:
    for item in source:
        if strict and isinstance(item, BadRecord):
            raise StrictStop(f"{item.message} (stopped: --strict)")
        yield item


def link_chunks(items: Iterable[Document | BadRecord], ranker: Ranker, options: LinkOptions = LinkOptions(),
                outcome: StreamOutcome | None = None) -> Generator[list[LinkedRecord], None, None]:
    """The output records of `items`, a chunk at a time, in input order (closing the iterator stops the run)."""
    stream = iter_stream(
        _checked(items, options.strict),
        units=lambda item: len(item.mentions) if isinstance(item, Document) else 0,
        prepare=lambda group: ranker.prepare(_spans(group)),
        rank=lambda prepared: ranker.rank(prepared, options.top_k),
        chunk_size=options.chunk_size, outcome=outcome, encode=getattr(ranker, "encode_stage", None))
    try:
        for group, ranking in stream:
            yield _linked(group, ranking, options)
    finally:
        stream.close()


def read_inputs(sources: Sequence[str]) -> Iterator[Document | BadRecord]:
    """The documents of several inputs, one after the other; messages name the input when there are several."""
    for source in sources:
        yield from read_documents(source, source if len(sources) > 1 else None)


def link_documents(source: str | Sequence[str], ranker: Ranker, writer: JsonlWriter, *,
                   errors: JsonlWriter | None = None, options: LinkOptions = LinkOptions(),
                   progress: Callable[[LinkStats], None] | None = None) -> LinkStats:
    """Link every document of `source` (a path or "-", or several paths, in order) and write the output
    records in input order."""
    sources = [source] if isinstance(source, str) else list(source)
    stats = LinkStats(max_error_lines=options.max_error_lines)
    outcome = StreamOutcome()
    started = time.perf_counter()
    chunks = link_chunks(read_inputs(sources), ranker, options, outcome)
    try:
        for chunk in chunks:
            for linked in chunk:
                stats.add(linked)
                target = errors if errors is not None and linked.error is not None else writer
                if not target.write(linked.line):
                    stats.broken_pipe = True
                    break
            if stats.broken_pipe:
                break
            if progress:
                progress(stats)
    finally:
        chunks.close()
    stats.seconds = time.perf_counter() - started
    stats.stage_seconds.update(stage_seconds(ranker, outcome))
    return stats


def stage_seconds(ranker: Ranker, outcome: StreamOutcome) -> dict[str, float]:
    """Wall seconds each stage was busy: read+tokenise, encode, search, write."""
    ranked = getattr(ranker, "seconds", None) or {"encode": outcome.times.rank, "search": 0.0}
    return {"read_tokenize": outcome.times.prepare, "write": outcome.times.consume, **ranked}


def run_link(source: str | Sequence[str], ranker: Ranker, output: str = "-", *, errors_path: str | None = None,
             options: LinkOptions = LinkOptions(), progress: Callable[[LinkStats], None] | None = None) -> LinkStats:
    """`mel link`: link `source` (one input or several, in order) with `ranker` into `output`
    (atomically for files)."""
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
