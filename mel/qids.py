"""Wikidata item ids: "Q90" in files and messages, 90 (int64) in tables. The one codec.

An id is "Q" and a positive number without leading zeros ("P31", "q90" and "Q090"
are not item ids), small enough for an int64 table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeGuard

import numpy as np

from mel.errors import RecordError

QID_DTYPE = np.dtype("<i8")
MAX_QID_NUMBER = int(np.iinfo(QID_DTYPE).max)
_PATTERN = re.compile(r"Q[1-9][0-9]{0,18}")


def is_qid(value: object) -> TypeGuard[str]:
    """True for a Wikidata item id such as "Q90" whose number fits in an int64."""
    return (isinstance(value, str) and _PATTERN.fullmatch(value) is not None
            and int(value[1:]) <= MAX_QID_NUMBER)


def qid_to_int(qid: str | int | np.integer) -> int:
    """"Q90" -> 90; a positive integer passes through; anything else raises RecordError."""
    if isinstance(qid, (int, np.integer)) and not isinstance(qid, bool):
        if not 0 < qid <= MAX_QID_NUMBER:
            raise RecordError(f"not a Wikidata item number: {qid!r}")
        return int(qid)
    if not is_qid(qid):
        raise RecordError(f"not a Wikidata item id: {qid!r}")
    return int(qid[1:])


def qid_to_str(number: int | np.integer) -> str:
    """90 -> "Q90"."""
    return f"Q{qid_to_int(number)}"


def parse_qids(qids: Iterable[str | int] | np.ndarray) -> np.ndarray:
    """QIDs as strings ("Q90") or numbers -> an int64 array; RecordError on the first bad one."""
    if isinstance(qids, np.ndarray) and qids.dtype.kind in "iu":
        flat = qids.reshape(-1)
        if flat.dtype.kind == "u" and flat.size and int(flat.max()) > MAX_QID_NUMBER:  # would wrap to negative
            raise RecordError(f"not a Wikidata item number: {int(flat.max())}")
        array = flat.astype(QID_DTYPE, copy=False)
        if array.size and array.min() <= 0:
            raise RecordError(f"not a Wikidata item number: {int(array[array <= 0][0])}")
        return array
    return np.fromiter((qid_to_int(q) for q in qids), dtype=QID_DTYPE)
