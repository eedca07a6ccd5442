"""The knowledge base, tokenised once per run into memory-mapped tables.

The tokenizer does not change during training, so each entity's window
(`[M] label [M] description`, exactly as inference builds it) is tokenised
once and kept on disk, row for row:

    tokens.npy   int32 (n, max_length), padded with the pad id
    lengths.npy  int16 (n,)
    qids.npy     int64 (n,)     Q90 -> 90
    langs.npy    uint16 (n,)    index into kb.json's "languages"
    labels.jsonl one JSON string a line (the index's display labels)
    kb.json      counts, languages, and the reader's skip report

Every round embeds these rows for its index; batches look up positives and
negatives by QID. Memory holds one chunk while building, and the lookup
tables (a sorted QID array and first rows) while training.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from mel.artifacts import read_json, write_json
from mel.errors import InputError
from mel.indexes.store import GrowingNpy, load_npy
from mel.kb import read_kb
from mel.mentions import MentionTokenizer
from mel.qids import QID_DTYPE
from mel.skips import SkipReport

KB_FORMAT = "mel.train.kb.v1"
TOKEN_DTYPE = np.dtype("<i4")
LENGTH_DTYPE = np.dtype("<i2")

LANG_DTYPE = np.dtype("<u2")
_CHUNK = 4096


def pad_rows(rows: list[list[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-id lists -> (n, width) int32 table padded with `pad_id`, and lengths."""
    table = np.full((len(rows), width), pad_id, dtype=TOKEN_DTYPE)
    lengths = np.empty(len(rows), dtype=LENGTH_DTYPE)
    for i, ids in enumerate(rows):
        table[i, : len(ids)] = ids
        lengths[i] = len(ids)
    return table, lengths


@dataclass
class KBStore:
    folder: Path
    tokens: np.ndarray
    lengths: np.ndarray
    qids: np.ndarray
    langs: np.ndarray
    languages: list[str]
    unique_qids: np.ndarray  # sorted distinct QIDs
    first_rows: np.ndarray  # the first row of each of them
    info: dict

    def __len__(self) -> int:
        return len(self.qids)

    @property
    def num_qids(self) -> int:
        return len(self.unique_qids)

    def rows_of(self, qids: np.ndarray) -> np.ndarray:
        """The (first) KB row of each QID; -1 where the KB lacks it."""
        qids = np.asarray(qids, dtype=QID_DTYPE)
        if not len(self.unique_qids):
            return np.full(qids.shape, -1, dtype=np.int64)
        at = np.searchsorted(self.unique_qids, qids).clip(0, len(self.unique_qids) - 1)
        found = self.unique_qids[at] == qids
        return np.where(found, self.first_rows[at], -1)

    def contains(self, qids: np.ndarray) -> np.ndarray:
        return self.rows_of(qids) >= 0

    def labels(self) -> Iterator[str]:
        with open(self.folder / "labels.jsonl", "rb") as handle:
            for line in handle:
                yield orjson.loads(line)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> KBStore:
        folder = Path(folder)
        info = read_json(folder / "kb.json")
        if info.get("format") != KB_FORMAT:
            raise InputError(f"{folder}/kb.json: not a tokenised training KB")
        n, width = int(info["entries"]), int(info["max_length"])
        tokens = load_npy(folder / "tokens.npy", TOKEN_DTYPE, (n, width), mmap=True)
        lengths = load_npy(folder / "lengths.npy", LENGTH_DTYPE, (n,))
        qids = load_npy(folder / "qids.npy", QID_DTYPE, (n,))
        langs = load_npy(folder / "langs.npy", LANG_DTYPE, (n,))
        unique, first = np.unique(qids, return_index=True)
        return cls(folder, tokens, lengths, qids, langs, list(info["languages"]), unique, first.astype(np.int64), info)


def build_kb_store(folder: str | os.PathLike, kb: tuple[str, ...], tokens: MentionTokenizer, *,
                   langs: tuple[str, ...] | None = None, report: SkipReport | None = None,
                   progress=None) -> KBStore:
    """Read and tokenise the KB into `folder` (built aside, then renamed into place)."""
    folder = Path(folder)
    report = report if report is not None else SkipReport()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    width = tokens.max_length
    tables = {
        "tokens": GrowingNpy(partial / "tokens.npy", TOKEN_DTYPE, (width,)),
        "lengths": GrowingNpy(partial / "lengths.npy", LENGTH_DTYPE),
        "qids": GrowingNpy(partial / "qids.npy", QID_DTYPE),
        "langs": GrowingNpy(partial / "langs.npy", LANG_DTYPE),
    }
    languages: dict[str, int] = {}
    target = langs[0] if langs and len(langs) == 1 else None
    chunk: list = []

    def flush() -> None:
        table, lengths = pad_rows(tokens.entities([e.label for e in chunk], [e.description for e in chunk]),
                                  width, tokens.pad_id)
        tables["tokens"].append(table)
        tables["lengths"].append(lengths)
        tables["qids"].append(np.array([e.qid_int for e in chunk], dtype=QID_DTYPE))
        tables["langs"].append(np.array([languages.setdefault(e.lang, len(languages)) for e in chunk],
                                        dtype=LANG_DTYPE))
        labels.write(b"".join(orjson.dumps(e.label) + b"\n" for e in chunk))
        if progress is not None:
            progress(len(chunk))
        chunk.clear()

    with open(partial / "labels.jsonl", "wb") as labels:
        for entity in read_kb(list(kb), langs=langs, target_lang=target, report=report):
            chunk.append(entity)
            if len(chunk) >= _CHUNK:
                flush()
        if chunk:
            flush()
    count = tables["qids"].rows
    for table in tables.values():
        table.close()
    if count == 0:
        shutil.rmtree(partial)
        raise InputError(f"--kb {' '.join(kb)}: no entities read" + (f" ({'; '.join(report.lines()[:3])})"
                                                                       if report.lines() else ""))
    if len(languages) > np.iinfo(LANG_DTYPE).max:
        raise InputError(f"more than {np.iinfo(LANG_DTYPE).max} KB languages")
    write_json(partial / "kb.json", {
        "format": KB_FORMAT, "entries": count, "max_length": width, "languages": list(languages),
        "sources": list(kb), "langs": list(langs) if langs else None, "report": report.to_json(),
    })
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return KBStore.open(folder)
