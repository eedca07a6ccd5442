"""The one streaming pipeline of `mel link` and `mel eval`: prepare -> rank -> consume.

    reader thread:   take items from the source, cut chunks of about `chunk_size`
                     units (mentions), prepare each chunk (tokenise)       -> queue
    [encoder thread: encode each prepared chunk, when an `encode` stage is given] -> queue
    calling thread:  rank each chunk (encode with onnxruntime, search)     -> queue
    consumer thread: consume each chunk (write records, count hits)

The optional encoder thread is for a GPU: with it, tokenising, searching and
writing all overlap the encoder instead of searching waiting for it.

Chunks travel in input order, so output order is input order. Queues hold at most
`depth` chunks, so memory stays flat for any input. onnxruntime, ScaNN and the
tokenizer release the GIL, which lets the stages overlap. The first error of any
stage stops the others and is raised in the calling thread; `consume` returning
False (its reader went away: `mel link … | head`) ends the run quietly.

This is the only place in the library that starts threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()


@dataclass
class StageTimes:
    """Wall seconds each stage was busy (they overlap, so the sum exceeds the wall time)."""

    prepare: float = 0.0  # reading the source and preparing chunks
    encode: float = 0.0  # the optional encoder stage
    rank: float = 0.0
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


def run_stream(items: Iterable[T], *, prepare: Callable[[list[T]], Any], rank: Callable[[Any], Any],
               consume: Callable[[list[T], Any], bool], units: Callable[[T], int] = lambda item: 1,
               chunk_size: int = 1024, depth: int = 3,
               encode: Callable[[Any], Any] | None = None) -> StreamOutcome:
    """Run `items` through the stages; see the module docstring. `encode`, when given, maps
    each prepared chunk to what `rank` receives, on a thread of its own."""
    if chunk_size < 1 or depth < 1:
        raise ValueError("chunk_size and depth must be at least 1")
    outcome = StreamOutcome()
    times = outcome.times
    to_rank: queue.Queue = queue.Queue(maxsize=depth)
    to_encode: queue.Queue = queue.Queue(maxsize=depth) if encode is not None else to_rank
    to_consume: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(box: queue.Queue, value, taker: threading.Thread | None = None) -> bool:
        while not stop.is_set() and (taker is None or taker.is_alive()):
            try:
                box.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

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

    def encode_chunks() -> None:
        assert encode is not None
        try:
            while not stop.is_set():
                try:
                    chunk = to_encode.get(timeout=0.1)
                except queue.Empty:
                    continue
                if chunk is _DONE:
                    return
                started = time.perf_counter()
                chunk.prepared = encode(chunk.prepared)
                times.encode += time.perf_counter() - started
                if not put(to_rank, chunk):
                    return
        finally:
            put(to_rank, _DONE)

    def write() -> None:
        while not stop.is_set():
            try:
                chunk = to_consume.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk is _DONE:
                return
            started = time.perf_counter()
            carry_on = consume(chunk.items, chunk.ranked)
            times.consume += time.perf_counter() - started
            outcome.chunks += 1
            if not carry_on:
                outcome.stopped = True
                stop.set()
                return

    reader, consumer = _Stage(read, "mel-prepare"), _Stage(write, "mel-consume")
    stages = [reader, consumer] + ([_Stage(encode_chunks, "mel-encode")] if encode is not None else [])
    for stage in stages:
        stage.start()
    finished = False
    try:
        while True:
            try:
                chunk = to_rank.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():  # a stage gave up without handing on _DONE
                    break
                continue
            if chunk is _DONE or stop.is_set():
                break
            started = time.perf_counter()
            chunk.ranked = rank(chunk.prepared)
            times.rank += time.perf_counter() - started
            if not put(to_consume, chunk, consumer):
                break
        finished = True
    finally:
        try:
            if finished and not stop.is_set():
                put(to_consume, _DONE, consumer)  # let the consumer drain what is queued
            else:
                stop.set()  # an exception (Ctrl-C, a signal, a stage error): abandon the rest
            consumer.join()
        finally:
            # Even when a signal interrupts the draining: the consumer stops before the
            # caller drops its output, so nothing writes to a closed file.
            stop.set()
            consumer.join()
            # The encoder and reader touch no output (the reader may wait on input, a pipe):
            # when the run is abandoned they are left behind (daemon threads) after a short wait.
            for stage in stages[2:] + [reader]:
                stage.join(timeout=5 if finished else 0.5)
    for stage in (reader, *stages[2:], consumer):
        if stage.error is not None:
            raise stage.error
    return outcome
