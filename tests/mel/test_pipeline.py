"""The one streaming pipeline: order, bounded chunks, the first error, and a quiet stop."""

from __future__ import annotations

import threading

import pytest

from mel.pipeline import chunked, run_stream


def test_order_is_kept_and_every_item_is_consumed_once():
    seen, prepared_sizes = [], []

    def prepare(items):
        prepared_sizes.append(sum(items))
        return [i * 10 for i in items]

    outcome = run_stream(range(1, 101), units=lambda i: i, prepare=prepare, rank=lambda p: [x + 1 for x in p],
                         consume=lambda items, ranked: seen.extend(zip(items, ranked)) or True, chunk_size=50)
    assert seen == [(i, i * 10 + 1) for i in range(1, 101)]
    assert outcome.chunks == len(prepared_sizes) and not outcome.stopped
    assert all(size >= 50 for size in prepared_sizes[:-1])  # chunks close once they reach chunk_size units


def test_chunks_never_split_an_item_and_unitless_items_are_capped():
    assert [len(c) for c in chunked([5, 5, 5], lambda i: i, 7)] == [2, 1]
    assert [len(c) for c in chunked([0] * 50, lambda i: i, 1, max_items=16)] == [16, 16, 16, 2]


@pytest.mark.parametrize("stage", ["source", "prepare", "encode", "rank", "consume"])
def test_the_first_error_of_any_stage_is_raised_in_the_caller(stage):
    def source():
        yield from range(10)
        if stage == "source":
            raise ValueError("source")

    def fail(name, value):
        if stage == name:
            raise ValueError(name)
        return value

    with pytest.raises(ValueError, match=stage):
        run_stream(source(), prepare=lambda items: fail("prepare", items), rank=lambda p: fail("rank", p),
                   consume=lambda items, ranked: fail("consume", True), chunk_size=3,
                   encode=lambda p: fail("encode", p))
    assert threading.active_count() == 1 or all(not t.name.startswith("mel-") or not t.is_alive()
                                                for t in threading.enumerate())


def test_consume_returning_false_stops_the_run_quietly():
    consumed = []

    def consume(items, ranked):
        consumed.append(items)
        return len(consumed) < 2

    outcome = run_stream(iter(range(10_000)), prepare=list, rank=list, consume=consume, chunk_size=10)
    assert outcome.stopped and len(consumed) == 2


def test_memory_is_bounded_the_reader_runs_at_most_a_few_chunks_ahead():
    read, ranked = [], []

    def source():
        for i in range(1000):
            read.append(i)
            yield i

    def rank(prepared):
        # When chunk n is ranked, the reader can be at most `depth` chunks (+ the one it fills) ahead.
        ranked.append(len(read))
        return prepared

    run_stream(source(), prepare=list, rank=rank, consume=lambda items, r: True, chunk_size=10, depth=2)
    for number, seen in enumerate(ranked):
        assert seen <= (number + 1 + 2 + 1) * 10


def test_an_encode_stage_runs_on_its_own_thread_in_order():
    threads, seen = set(), []

    def encode(prepared):
        threads.add(threading.current_thread().name)
        return [x * 2 for x in prepared]

    outcome = run_stream(range(100), prepare=list, encode=encode, rank=lambda p: [x + 1 for x in p],
                         consume=lambda items, ranked: seen.extend(ranked) or True, chunk_size=7)
    assert seen == [2 * i + 1 for i in range(100)]
    assert threads == {"mel-encode"} and outcome.times.encode > 0


def test_a_stop_while_the_caller_waits_does_not_hang():
    # The consumer stops while the reader is still preparing: the caller must not wait forever.
    def slow_prepare(items):
        import time

        time.sleep(0.05)
        return items

    for encode in (None, list):
        outcome = run_stream(range(1000), prepare=slow_prepare, rank=list, encode=encode,
                             consume=lambda items, ranked: False, chunk_size=10)
        assert outcome.stopped
