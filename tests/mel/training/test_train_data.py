"""Round data: the endless mention stream, rank shares, and batches of b × (1 + neg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mel.errors import InputError
from mel.records import TrainingMention
from mel.training.batches import RoundBatches
from mel.training.kb_store import KBStore
from mel.training.round_data import MentionStream, RoundData


def mentions(qids):
    return [TrainingMention(qid=f"Q{q}", lang="en", text=f"m{q} text", start=0, end=2, origin="wiki", source=f"f:{i}")
            for i, q in enumerate(qids)]


def stream_of(qids, known=(1, 2, 3, 5)):
    opened = []

    def open_source(first_pass):
        opened.append(first_pass)
        return iter(mentions(qids))

    stream = MentionStream(open_source, lambda q: np.isin(q, known))
    return stream, opened


def positions_and_qids(items):
    return [(p, m.qid) for p, m in items]


def test_the_stream_skips_unknown_gold_and_wraps_around():
    stream, opened = stream_of([1, 9, 2, 3, 8, 5])
    assert positions_and_qids(stream.take(0, 3)) == [(0, "Q1"), (1, "Q2"), (2, "Q3")]
    # The next round reads on: past the end the sources open again.
    assert positions_and_qids(stream.take(3, 3)) == [(3, "Q5"), (4, "Q1"), (5, "Q2")]
    assert stream.total == 4 and stream.rejected == 2
    assert opened == [True, False]  # skipped lines are reported on the first pass only


def test_a_round_longer_than_the_data_takes_each_mention_once():
    stream, _ = stream_of([1, 2, 3])
    assert positions_and_qids(stream.take(0, 10)) == [(0, "Q1"), (1, "Q2"), (2, "Q3")]
    assert stream.end_of(0, 10) == 3
    assert positions_and_qids(stream.take(3, 2)) == [(3, "Q1"), (4, "Q2")]  # no mention lost at the seam


def test_a_fresh_stream_seeks_to_a_resumed_position():
    first, _ = stream_of([1, 2, 3, 5])
    list(first.take(0, 6))
    resumed, _ = stream_of([1, 2, 3, 5])
    assert positions_and_qids(resumed.take(6, 3)) == positions_and_qids(first.take(6, 3))


def test_no_linkable_mention_is_an_error():
    stream, _ = stream_of([7, 8])
    with pytest.raises(InputError, match="no training mention has its gold entity in the KB"):
        list(stream.take(0, 4))


def toy_kb(n=10, width=6):
    tokens = np.zeros((n, width), dtype=np.int32)
    tokens[:, 0] = np.arange(100, 100 + n)  # row r starts with token 100 + r
    lengths = np.full(n, 3, dtype=np.int16)
    qids = np.arange(1, n + 1, dtype=np.int64)
    return KBStore(Path("."), tokens, lengths, qids, np.zeros(n, np.uint16), ["en"], qids, np.arange(n), {})


def toy_round(n=5, neg=2, width=6):
    tokens = np.zeros((n, width), dtype=np.int32)
    tokens[:, 0] = np.arange(n)  # mention row r starts with token r
    gold = np.arange(1, n + 1, dtype=np.int64)
    negatives = np.stack([(gold + d) % 10 + 1 for d in range(1, neg + 1)], axis=1)
    return RoundData(Path("."), tokens, np.full(n, 4, dtype=np.int16), gold, negatives, {})


def test_a_batch_holds_mentions_then_positive_and_negatives_per_mention():
    data, kb = toy_round(), toy_kb()
    batches = RoundBatches(data, kb, batch_size=2, seed=0, round_index=0, rank=0, pad_id=0,
                           device=torch.device("cpu"))
    batch = batches.batch(0)
    rows = batches.rows(0)
    assert batch.ids.shape == (2 + 2 * 3, 4) and batch.mentions == 2  # cut to the longest row (4 tokens)
    assert batch.ids[:2, 0].tolist() == rows.tolist()
    for i, row in enumerate(rows):
        expected = [data.qids[row], *data.negatives[row]]
        assert batch.column_qids[3 * i: 3 * i + 3].tolist() == expected
        assert batch.ids[2 + 3 * i: 5 + 3 * i, 0].tolist() == [99 + q for q in expected]  # KB rows of those QIDs
    assert batch.gold_qids.tolist() == data.qids[rows].tolist()
    assert batch.mask[2:, 3].sum() == 0 and batch.mask[:2].all()


def test_batch_order_is_a_pure_function_of_seed_round_rank_and_step():
    data, kb = toy_round(n=5), toy_kb()

    def order(seed=0, round_index=0, rank=0):
        batches = RoundBatches(data, kb, batch_size=2, seed=seed, round_index=round_index, rank=rank, pad_id=0,
                               device=torch.device("cpu"))
        return [batches.rows(step).tolist() for step in range(5)]

    assert order() == order()
    assert order() != order(seed=1) and order() != order(round_index=1)
    flat = sum(order(), [])
    assert sorted(flat[:5]) == [0, 1, 2, 3, 4] and sorted(flat[5:10]) == [0, 1, 2, 3, 4]  # every row once a pass
