"""`mel link`: documents in, QID links out, streamed through encoder and index.

Three stages run at once, joined by small bounded queues, so memory stays flat
for any corpus and the encoder is not left waiting on I/O:

    reader thread:  read + parse lines, cut chunks of ~chunk_size mentions,
                    tokenise each mention's window          -> queue
    main thread:    encode (onnxruntime) and search (ScaNN)  -> queue
    writer thread:  build output records, write JSON Lines (zstd if .zst)

Chunks travel in input order, so output order is input order. onnxruntime,
ScaNN and the tokenizer release the GIL, which is what lets the stages overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from mel.indexes.store import qid_to_str
from mel.documents import BadRecord, output_record, read_documents
from mel.errors import InputError
from mel.mentions import MentionSpan
from mel.records import Candidate, Document, Prediction
from mel.retrieval import Retriever
from mel.streams import JsonlWriter

_DONE = object()


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


@dataclass
class _Chunk:
    items: list  # Document | BadRecord, in input order
    spans: list[MentionSpan]
    ids: list[list[int]]
    result: object = None  # SearchResult once searched


@dataclass(frozen=True)
class LinkOptions:
    top_k: int = 10
    min_score: float | None = None
    strict: bool = False
    chunk_size: int = 1024  # mentions per chunk (several encoder batches)
    max_error_lines: int = 20


class _Stage(threading.Thread):
    """A daemon thread that records the first exception for the main thread to raise."""

    def __init__(self, target: Callable[[], None], name: str):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the main thread
            self.error = exc


def _chunks(source: Iterator, retriever: Retriever, options: LinkOptions, stats: LinkStats) -> Iterator[_Chunk]:
    items: list = []
    spans: list[MentionSpan] = []
    for item in source:
        started = time.perf_counter()
        items.append(item)
        if isinstance(item, Document):
            spans.extend(MentionSpan(item.text, m.start, m.end) for m in item.mentions)
        elif options.strict:
            raise StrictStop(f"{item.message} (stopped: --strict)")
        if len(spans) >= options.chunk_size:
            chunk = _Chunk(items, spans, retriever.query_ids(spans))
            stats.stage_seconds["read_tokenize"] += time.perf_counter() - started
            yield chunk
            items, spans = [], []
        else:
            stats.stage_seconds["read_tokenize"] += time.perf_counter() - started
    if items:
        yield _Chunk(items, spans, retriever.query_ids(spans))


def _predictions(result, row: int, count: int, options: LinkOptions) -> list[Prediction]:
    out = []
    for r in range(row, row + count):
        qids, scores = result.qids[r], result.scores[r]
        candidates = [Candidate(qid_to_str(int(q)), float(s)) for q, s in zip(qids, scores) if q >= 0]
        prediction = Prediction.from_candidates(candidates)
        if options.min_score is not None and prediction.score is not None and prediction.score < options.min_score:
            prediction = Prediction(qid=None, score=prediction.score, candidates=prediction.candidates)
        out.append(prediction)
    return out


def _write_chunk(chunk: _Chunk, writer: JsonlWriter, errors: JsonlWriter | None, options: LinkOptions,
                 stats: LinkStats) -> bool:
    row = 0
    for item in chunk.items:
        if isinstance(item, BadRecord):
            stats.errors += 1
            if len(stats.error_lines) < options.max_error_lines:
                stats.error_lines.append(item.message)
            ok = (errors or writer).write(output_record(item))
        else:
            predictions = _predictions(chunk.result, row, len(item.mentions), options)
            row += len(item.mentions)
            stats.documents += 1
            stats.mentions += len(predictions)
            linked = sum(p.qid is not None for p in predictions)
            stats.linked += linked
            stats.nil += len(predictions) - linked
            ok = writer.write(output_record(item, predictions))
        if not ok:
            return False
    return True


def link_documents(source: str, retriever: Retriever, writer: JsonlWriter, *, errors: JsonlWriter | None = None,
                   options: LinkOptions = LinkOptions(), progress: Callable[[LinkStats], None] | None = None
                   ) -> LinkStats:
    """Link every document of `source` (a path or "-") and write the output records in input order."""
    stats = LinkStats()
    started = time.perf_counter()
    to_encode: queue.Queue = queue.Queue(maxsize=3)
    to_write: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def put(q: queue.Queue, value) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in _chunks(read_documents(source), retriever, options, stats):
                if not put(to_encode, chunk):
                    return
        finally:
            put(to_encode, _DONE)

    def write() -> None:
        while not stop.is_set():
            try:
                chunk = to_write.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk is _DONE:
                return
            t0 = time.perf_counter()
            ok = _write_chunk(chunk, writer, errors, options, stats)
            stats.stage_seconds["write"] += time.perf_counter() - t0
            if progress:
                progress(stats)
            if not ok:
                stats.broken_pipe = True
                stop.set()
                return

    reader, writer_thread = _Stage(read, "mel-read"), _Stage(write, "mel-write")
    reader.start()
    writer_thread.start()
    finished = False
    try:
        while True:
            chunk = to_encode.get()
            if chunk is _DONE or stop.is_set():
                break
            if chunk.ids:
                t0 = time.perf_counter()
                vectors = retriever.encoder.encode_ids(chunk.ids)
                t1 = time.perf_counter()
                chunk.result = retriever.search_vectors(vectors, options.top_k)
                stats.stage_seconds["encode"] += t1 - t0
                stats.stage_seconds["search"] += time.perf_counter() - t1
            if not put(to_write, chunk):
                break
            if writer_thread.error or not writer_thread.is_alive():
                break
        finished = True
    finally:
        if finished and not stop.is_set():
            put(to_write, _DONE)  # let the writer drain what is queued
        else:
            stop.set()  # an exception (Ctrl-C, a stage error): abandon the rest
        writer_thread.join()
        stop.set()
        reader.join(timeout=5)
    for stage in (reader, writer_thread):
        if stage.error is not None:
            raise stage.error
    stats.seconds = time.perf_counter() - started
    return stats



def run_link(source: str, index: str, output: str = "-", *, errors_path: str | None = None,
             options: LinkOptions = LinkOptions(), model: str | None = None, device: str = "auto",
             precision: str = "auto", threads: int | None = None, batch_size: int = 64, exact: bool = False,
             allow_model_mismatch: bool = False, announce: Callable[[str], None] | None = None,
             progress: Callable[[LinkStats], None] | None = None) -> LinkStats:
    """`mel link`: open the index and model, link `source`, write `output` (atomically for files)."""
    retriever = Retriever.open(index, model=model, device=device, precision=precision, threads=threads,
                               batch_size=batch_size, exact=exact, allow_model_mismatch=allow_model_mismatch,
                               announce=announce)
    errors = JsonlWriter(errors_path) if errors_path else None
    try:
        with JsonlWriter(output) as writer:
            stats = link_documents(source, retriever, writer, errors=errors, options=options, progress=progress)
    except BaseException:
        if errors is not None:
            errors.abort()
        raise
    if errors is not None:
        errors.close()
    stats.broken_pipe = stats.broken_pipe or writer.broken_pipe
    return stats
