"""The mention markup of the example sources: `[M]surface[M]` or `[M]surface|QID[M]`.

Shared by make_corpus.py and make_mewsli_sample.py, so both count offsets the same
way (Unicode code points, as mel documents and Mewsli-9 do). Standard library only.
"""

from __future__ import annotations

import re
import sys

MARKED = re.compile(r"\[M\](?P<surface>[^\[\]|]+?)(?:\|(?P<qid>Q[1-9][0-9]*))?\[M\]")


def strip_markers(marked: str, where: str) -> tuple[str, list[tuple[int, str, str | None]]]:
    """Clean text and (start, surface, QID or None) per mention; exits on a malformed marker."""
    pieces: list[str] = []
    mentions: list[tuple[int, str, str | None]] = []
    length = 0
    last = 0
    for match in MARKED.finditer(marked):
        before = marked[last:match.start()]
        pieces.append(before)
        length += len(before)
        surface = match["surface"]
        mentions.append((length, surface, match["qid"]))
        pieces.append(surface)
        length += len(surface)
        last = match.end()
    pieces.append(marked[last:])
    text = "".join(pieces)
    if "[M]" in text:
        sys.exit(f"{where}: a [M] marker is left after parsing (expected '[M]surface[M]' or '[M]surface|QID[M]')")
    return text, mentions
