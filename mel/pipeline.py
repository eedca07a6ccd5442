"""The one streaming pipeline of `mel link` and `mel eval`: prepare -> rank -> consume.

    reader thread:   take items from the source, cut chunks of about `chunk_size`
                     units (mentions), prepare each chunk (tokenise)       -> queue
    [encoder thread: encode each prepared chunk, when an `encode` stage is given] -> queue
    ranking thread:  rank each chunk (encode with onnxruntime, search)     -> queue
    calling thread:  consume each chunk (write records, count hits)

The optional encoder thread is for a GPU: with it, tokenising, searching and
writing all overlap the encoder instead of searching waiting for it.

Chunks travel in input order, so output order is input order. Queues hold at most
`depth` chunks, so memory stays flat for any input. onnxruntime, ScaNN and the
tokenizer release the GIL, which lets the stages overlap. The first error of any
stage stops the others and is raised in the calling thread; `consume` returning
False (its reader went away: `mel link … | head`) ends the run quietly.

`iter_stream` hands the ranked chunks to the caller as an iterator (the Python
API's `Linker.link` yields records from it); `run_stream` consumes them with a
callback.

This is the only place in the library that starts threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()


@dataclass
class StageTimes:
    """Wall seconds each stage was busy (they overlap, so the sum exceeds the wall time)."""

    prepare: float = 0.0  # reading the source and preparing chunks
    rank: float = 0.0
    encode: float = 0.0  # the optional encoder stage
    consume: float = 0.0


@dataclass
class Chunk(Generic[T]):
    items: list[T]
    prepared: Any
    ranked: Any = None


@dataclass
class StreamOutcome:
    chunks: int = 0
    stopped: bool = False  # consume asked to stop (a closed pipe)
    times: StageTimes = field(default_factory=StageTimes)


class _Stage(threading.Thread):
    """A daemon thread that keeps its first exception for the calling thread to raise."""

    def __init__(self, target: Callable[[], None], name: str):
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the calling thread
            self.error = exc


def chunked(items: Iterable[T], units: Callable[[T], int], chunk_size: int,
            max_items: int | None = None) -> Iterator[list[T]]:
    """Consecutive items in lists of about `chunk_size` units (an item is never split);
    at most `max_items` items a list, so unit-less items cannot pile up."""
    max_items = max_items or 16 * chunk_size
    chunk: list[T] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += units(item)
        if size >= chunk_size or len(chunk) >= max_items:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def iter_stream(items: Iterable[T], *, prepare: Callable[[list[T]], Any], rank: Callable[[Any], Any],
                units: Callable[[T], int] = lambda item: 1, chunk_size: int = 1024, depth: int = 3,
                outcome: StreamOutcome | None = None, encode: Callable[[Any], Any] | None = None
                ) -> Generator[tuple[list[T], Any], None, None]:
    """(items, ranked) for each chunk, in input order, consumed by the caller; see the module docstring.
    `encode`, when given, maps each prepared chunk to what `rank` receives, on a thread of its own.

    Closing the iterator early (a `break`, an exception in the caller) stops the other stages.
    """
    if chunk_size < 1 or depth < 1:
        raise ValueError("chunk_size and depth must be at least 1")
    outcome = outcome if outcome is not None else StreamOutcome()
    times = outcome.times
    to_rank: queue.Queue = queue.Queue(maxsize=depth)
    to_encode: queue.Queue = queue.Queue(maxsize=depth) if encode is not None else to_rank
    to_consume: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(box: queue.Queue, value) -> bool:
        while not stop.is_set():
            try:
                box.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(box: queue.Queue, giver: threading.Thread):
        while True:
            try:
                return box.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set() or not giver.is_alive() and box.empty():
                    return _DONE

    def read() -> None:
        try:
            source = chunked(items, units, chunk_size)
            while True:
                started = time.perf_counter()
                group = next(source, None)
                if group is None:
                    break
                chunk = Chunk(group, prepare(group))
                times.prepare += time.perf_counter() - started
                if not put(to_encode, chunk):
                    return
        finally:
            put(to_encode, _DONE)

    def relay(inbox: queue.Queue, giver: threading.Thread, step: Callable[[Chunk], None], clock: str,
              outbox: queue.Queue) -> Callable[[], None]:
        """A middle stage: take chunks from `inbox`, `step` each (its time charged to `times.clock`),
        hand them on to `outbox`."""
        def run() -> None:
            try:
                while True:
                    chunk = take(inbox, giver)
                    if chunk is _DONE:
                        break
                    started = time.perf_counter()
                    step(chunk)
                    setattr(times, clock, getattr(times, clock) + time.perf_counter() - started)
                    if not put(outbox, chunk):
                        return
            finally:
                put(outbox, _DONE)
        return run

    def encode_step(chunk: Chunk) -> None:
        assert encode is not None
        chunk.prepared = encode(chunk.prepared)

    def rank_step(chunk: Chunk) -> None:
        chunk.ranked = rank(chunk.prepared)

    reader = _Stage(read, "mel-prepare")
    encoder = (_Stage(relay(to_encode, reader, encode_step, "encode", to_rank), "mel-encode")
               if encode is not None else None)
    ranker = _Stage(relay(to_rank, encoder if encoder is not None else reader, rank_step, "rank", to_consume),
                    "mel-rank")
    stages = [reader, *([encoder] if encoder is not None else []), ranker]
    for stage in stages:
        stage.start()
    finished = False
    try:
        while True:
            chunk = take(to_consume, ranker)
            if chunk is _DONE:
                break
            started = time.perf_counter()
            yield chunk.items, chunk.ranked
            times.consume += time.perf_counter() - started
            outcome.chunks += 1
        finished = True
    finally:
        # The stages write no output (the caller does, in this thread), so stopping them never
        # races a caller that drops its output on an exception (Ctrl-C, a signal).
        stop.set()
        ranker.join(timeout=5)
        if encoder is not None:
            encoder.join(timeout=5)
        # The reader may wait on input (a pipe) and touches no output: when the run is
        # abandoned it is left behind (a daemon thread) after a short wait.
        reader.join(timeout=5 if finished else 0.5)
    for stage in stages:
        if stage.error is not None:
            raise stage.error


def run_stream(items: Iterable[T], *, prepare: Callable[[list[T]], Any], rank: Callable[[Any], Any],
               consume: Callable[[list[T], Any], bool], units: Callable[[T], int] = lambda item: 1,
               chunk_size: int = 1024, depth: int = 3, encode: Callable[[Any], Any] | None = None) -> StreamOutcome:
    """Run `items` through the stages, `consume` in the calling thread; see the module docstring."""
    outcome = StreamOutcome()
    stream = iter_stream(items, prepare=prepare, rank=rank, units=units, chunk_size=chunk_size, depth=depth,
                         outcome=outcome, encode=encode)
    try:
        for group, ranked in stream:
            if not consume(group, ranked):
                outcome.stopped = True
                break
    finally:
        stream.close()
    return outcome
