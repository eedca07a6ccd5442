"""Tokenising mentions and entities into fixed-size windows (thesis §5.1).

A mention becomes `<s> prefix … left context [M] mention [M] right context … </s>`
with the mention in the middle of `max_length` tokens: as many tokens before and
after as fit, and where the text ends on one side the window extends to the
other. An entity is the same window with the label as the "mention" and the
description as right context: `[M] label [M] description`. Mention-only
queries (label indexes) are the prefix and the mention string alone.

Only a character window around each mention is tokenised, so documents of any
length cost the same per mention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from mel.models import ModelManifest

# Characters of context tokenised on each side; generous for 64 tokens in any
# script (CJK runs about one character a token, Latin four to six).
_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class MentionSpan:
    """A mention to encode: `text[start:end]` in Unicode code points.

    `lang` is its document's language when known; `doc` numbers its document within
    the batch being ranked, so that rankers can see a document's other mentions.
    """

    text: str
    start: int
    end: int
    lang: str | None = None
    doc: int | None = None

    @property
    def string(self) -> str:
        return self.text[self.start : self.end]


def document_groups(docs: Sequence[int | None]) -> list[list[int]]:
    """The positions of each document's mentions, given each mention's `doc` (None: alone, in no group)."""
    groups: dict[int, list[int]] = {}
    for m, doc in enumerate(docs):
        if doc is not None:
            groups.setdefault(doc, []).append(m)
    return list(groups.values())


class MentionTokenizer:
    """Turns mentions, entities and strings into token-id lists of at most `max_length`."""

    def __init__(self, tokenizer: Tokenizer, manifest: ModelManifest, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length or manifest.max_length
        self.marker_id = manifest.marker_id
        self.start_id = manifest.special_ids["start"]
        self.end_id = manifest.special_ids["end"]
        self.pad_id = manifest.special_ids["pad"]
        self.prefix_ids = {
            role: tokenizer.encode(prefix, add_special_tokens=False).ids if prefix else []
            for role, prefix in manifest.prefixes.items()
        }
        if self.max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")

    def _pieces(self, strings: Sequence[str]) -> list[list[int]]:
        if not strings:
            return []
        return [e.ids for e in self.tokenizer.encode_batch(list(strings), add_special_tokens=False)]

    def _assemble(self, role: str, left: list[int], middle: list[int], right: list[int]) -> list[int]:
        prefix = self.prefix_ids.get(role, [])
        budget = self.max_length - 2 - len(prefix) - 2  # <s> </s> and two markers
        middle = middle[: max(1, budget // 2)] if len(middle) > budget // 2 else middle
        room = budget - len(middle)
        take_left = min(len(left), room // 2)
        take_right = min(len(right), room - take_left)
        take_left = min(len(left), room - take_right)  # give the other side what one side cannot use
        ids = [self.start_id, *prefix]
        ids += left[len(left) - take_left:] if take_left else []
        ids += [self.marker_id, *middle, self.marker_id]
        ids += right[:take_right]
        ids.append(self.end_id)
        return ids

    def mentions(self, spans: Sequence[MentionSpan], role: str = "mention") -> list[list[int]]:
        """Mentions in context, each centred in its window between `[M]` markers."""
        reach = self.max_length * _CHARS_PER_TOKEN
        lefts, middles, rights, cut_left, cut_right = [], [], [], [], []
        for span in spans:
            lo = max(0, span.start - reach)
            hi = min(len(span.text), span.end + reach)
            lefts.append(span.text[lo:span.start])
            middles.append(span.text[span.start:span.end])
            rights.append(span.text[span.end:hi])
            cut_left.append(lo > 0)
            cut_right.append(hi < len(span.text))
        left_ids, middle_ids, right_ids = self._pieces(lefts), self._pieces(middles), self._pieces(rights)
        out = []
        for i in range(len(spans)):
            # A window cut mid-word starts (or ends) with a partial word piece: drop it.
            left = left_ids[i][1:] if cut_left[i] and left_ids[i] else left_ids[i]
            right = right_ids[i][:-1] if cut_right[i] and right_ids[i] else right_ids[i]
            out.append(self._assemble(role, left, middle_ids[i], right))
        return out

    def entities(self, labels: Sequence[str], descriptions: Sequence[str]) -> list[list[int]]:
        """`[M] label [M] description`, truncated to the window."""
        reach = self.max_length * _CHARS_PER_TOKEN
        label_ids = self._pieces(labels)
        desc_ids = self._pieces([d[:reach] for d in descriptions])
        return [self._assemble("entity", [], label_ids[i], desc_ids[i]) for i in range(len(labels))]

    def strings(self, strings: Sequence[str], role: str = "mention") -> list[list[int]]:
        """A mention string or label alone (no context, no markers), for label indexes."""
        prefix = self.prefix_ids.get(role, [])
        room = self.max_length - 2 - len(prefix)
        return [[self.start_id, *prefix, *ids[:room], self.end_id]
                for ids in self._pieces([s[: self.max_length * _CHARS_PER_TOKEN] for s in strings])]

    def texts(self, texts: Sequence[str], role: str | None = None) -> list[list[int]]:
        """Plain texts (for `mel model embed`): the role's prefix, truncated to the window."""
        prefix = self.prefix_ids.get(role, []) if role else []
        room = self.max_length - 2 - len(prefix)
        return [[self.start_id, *prefix, *ids[:room], self.end_id] for ids in self._pieces(texts)]
