"""Each round's training mentions and their mined negatives, streamed to disk.

Training mentions come from `--links` as one endless sequence: the accepted
mentions (gold QID in the KB) in reading order, starting again from the top
when the sources run out. A round takes the next `steps × batch × world`
positions (all of them once, when the sources hold fewer); position p goes to
rank p mod world. Nothing but one chunk is held in memory: each chunk is
tokenised (the same MentionTokenizer as at inference), its queries embedded
and searched, its negatives sampled, and all of it appended to the rank's
tables under work/round-NN/rank-K/:

    tokens.npy int32 (n, max_length)   lengths.npy int16 (n,)
    qids.npy int64 (n,)                negatives.npy int64 (n, neg)
    done.json  count, cursor after the round, mining stats (written last)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.artifacts import read_json, write_json
from mel.errors import InputError
from mel.indexes.store import GrowingNpy, load_npy
from mel.mentions import MentionSpan, MentionTokenizer
from mel.qids import qid_to_int
from mel.records import TrainingMention
from mel.skips import SkipReport
from mel.training.kb_store import LENGTH_DTYPE, QID_DTYPE, TOKEN_DTYPE, pad_rows
from mel.training.mining import MiningStats, NegativeMiner

ROUND_FORMAT = "mel.train.round.v1"
CHUNK = 4096
_SOURCE_CHUNK = 1024


class MentionStream:
    """The accepted training mentions as an endless, seekable sequence.

    `open_source()` yields the mentions from the start; `accept(qids)` says
    which gold QIDs the KB has (the others are counted in `rejected`). The
    live reader is kept between calls, so consecutive rounds read on; a
    seek backwards (or a fresh process resuming) starts from the top again.
    """

    def __init__(self, open_source: Callable[[bool], Iterator[TrainingMention]],
                 accept: Callable[[np.ndarray], np.ndarray]):
        self._open_source = open_source  # open_source(first_pass): a pass over the sources
        self._pending: TrainingMention | None = None  # read, then handed back by take()
        self._accept = accept
        self.total: int | None = None  # accepted mentions in one pass, once known
        self.rejected = 0  # mentions whose gold QID is not in the KB (first pass)
        self._iterator: Iterator[TrainingMention] | None = None
        self._position = 0  # absolute position of the next mention
        self._in_pass = 0  # its position within the current pass

    def _accepted(self, count_rejected: bool) -> Iterator[TrainingMention]:
        chunk: list[TrainingMention] = []
        for mention in self._open_source(count_rejected):
            chunk.append(mention)
            if len(chunk) >= _SOURCE_CHUNK:
                yield from self._filter(chunk, count_rejected)
                chunk = []
        yield from self._filter(chunk, count_rejected)

    def _filter(self, chunk: list[TrainingMention], count_rejected: bool) -> list[TrainingMention]:
        if not chunk:
            return []
        keep = self._accept(np.array([qid_to_int(m.qid) for m in chunk], dtype=np.int64))
        if count_rejected:
            self.rejected += int(len(chunk) - keep.sum())
        return [m for m, k in zip(chunk, keep) if k]

    def _restart(self, position: int) -> None:
        self._pending = None
        self._iterator = self._accepted(count_rejected=self.total is None)
        self._position = position
        self._in_pass = 0

    def _next(self) -> TrainingMention:
        if self._iterator is None:
            self._restart(0)
        if self._pending is not None:
            mention, self._pending = self._pending, None
            self._position += 1
            self._in_pass += 1
            return mention
        assert self._iterator is not None  # set by _restart
        try:
            mention = next(self._iterator)
        except StopIteration:
            if self._in_pass == 0:
                raise InputError("--links: no training mention has its gold entity in the KB "
                                 f"({self.rejected} mention(s) read, none linkable)") from None
            self.total = self._in_pass
            self._restart(self._position)
            mention = next(self._iterator)
        self._position += 1
        self._in_pass += 1
        return mention

    def seek(self, position: int) -> None:
        if self._iterator is not None and position == self._position:
            return
        if self.total:
            self._restart(position - position % self.total)
        else:
            self._restart(0)
        while self._position < position:
            self._next()

    def take(self, start: int, count: int) -> Iterator[tuple[int, TrainingMention]]:
        """(position, mention) for positions start, start+1, …: `count` of them,
        or one pass's worth when the sources hold fewer."""
        self.seek(start)
        taken = 0
        while taken < count and (self.total is None or taken < self.total):
            position = self._position
            mention = self._next()
            if self.total is not None and taken >= self.total:
                # The sources ran out just now: hand the first mention of the next pass back.
                self._pending = mention
                self._position -= 1
                self._in_pass -= 1
                break
            yield position, mention
            taken += 1

    def end_of(self, start: int, count: int) -> int:
        """The cursor after `take(start, count)` has run."""
        return start + (count if self.total is None else min(count, self.total))


@dataclass
class RoundData:
    """One rank's finished tables of one round (memory-mapped)."""

    folder: Path
    tokens: np.ndarray
    lengths: np.ndarray
    qids: np.ndarray
    negatives: np.ndarray
    info: dict

    def __len__(self) -> int:
        return len(self.qids)

    @staticmethod
    def is_done(folder: str | os.PathLike) -> bool:
        return (Path(folder) / "done.json").is_file()

    @classmethod
    def open(cls, folder: str | os.PathLike) -> RoundData:
        folder = Path(folder)
        info = read_json(folder / "done.json")
        n, width, neg = int(info["mentions"]), int(info["max_length"]), int(info["negatives"])
        return cls(
            folder,
            load_npy(folder / "tokens.npy", TOKEN_DTYPE, (n, width), mmap=True),
            load_npy(folder / "lengths.npy", LENGTH_DTYPE, (n,)),
            load_npy(folder / "qids.npy", QID_DTYPE, (n,)),
            load_npy(folder / "negatives.npy", QID_DTYPE, (n, neg)),
            info,
        )


def build_round_data(
    folder: str | os.PathLike,
    stream: MentionStream,
    *,
    start: int,
    count: int,
    rank: int,
    world: int,
    tokens: MentionTokenizer,
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray],
    miner: NegativeMiner,
    rng: np.random.Generator,
    query_kind: str = "context",
    progress: Callable[[int], None] | None = None,
) -> RoundData:
    """Read positions [start, start + count) of the stream, keep this rank's
    share, tokenise, mine and write them to `folder`.

    `embed(tokens, lengths)` gives unit vectors; `query_kind` "mention" mines
    with the mention string alone (no context) instead of the context window.
    """
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    width, neg = tokens.max_length, miner.negatives
    tables = {
        "tokens": GrowingNpy(folder / "tokens.npy", TOKEN_DTYPE, (width,)),
        "lengths": GrowingNpy(folder / "lengths.npy", LENGTH_DTYPE),
        "qids": GrowingNpy(folder / "qids.npy", QID_DTYPE),
        "negatives": GrowingNpy(folder / "negatives.npy", QID_DTYPE, (neg,)),
    }
    stats = MiningStats()
    chunk: list[TrainingMention] = []

    def flush() -> None:
        spans = [MentionSpan(m.text, m.start, m.end) for m in chunk]
        table, lengths = pad_rows(tokens.mentions(spans), width, tokens.pad_id)
        if query_kind == "mention":
            queries, query_lengths = pad_rows(tokens.strings([m.mention for m in chunk]), width, tokens.pad_id)
        else:
            queries, query_lengths = table, lengths
        gold = np.array([qid_to_int(m.qid) for m in chunk], dtype=QID_DTYPE)
        negatives = miner.sample(embed(queries, query_lengths), gold, rng, stats)
        tables["tokens"].append(table)
        tables["lengths"].append(lengths)
        tables["qids"].append(gold)
        tables["negatives"].append(negatives)
        if progress is not None:
            progress(len(chunk))
        chunk.clear()

    for position, mention in stream.take(start, count):
        if position % world == rank:
            chunk.append(mention)
            if len(chunk) >= CHUNK:
                flush()
    if chunk:
        flush()
    n = tables["qids"].rows
    for table in tables.values():
        table.close()
    if n == 0:
        raise InputError(f"rank {rank}: no training mentions for this process (only {stream.total} linkable "
                         f"mentions for {world} processes)")
    write_json(folder / "done.json", {
        "format": ROUND_FORMAT, "mentions": n, "max_length": width, "negatives": neg, "start": start,
        "cursor": stream.end_of(start, count), "query_kind": query_kind, "mining": stats.to_json(),
        "stream_total": stream.total, "rejected": stream.rejected,
    })
    return RoundData.open(folder)


def mention_sources(links: Sequence[str], langs: Sequence[str] | None,
                    report: SkipReport) -> Callable[[bool], Iterator[TrainingMention]]:
    """A function that opens `--links` from the start (DaMuEL parts or mel
    documents); skipped lines are reported on the first pass only."""
    from mel.kb import read_training_mentions

    def open_source(first_pass: bool) -> Iterator[TrainingMention]:
        return read_training_mentions(list(links), langs=langs, report=report if first_pass else SkipReport())

    return open_source
