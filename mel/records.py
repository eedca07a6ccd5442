"""The data records that flow between mel's stages, with explicit JSON forms.

Each record is a small frozen dataclass with `to_json()` (a dict for orjson)
and `from_json()` (which raises RecordError with a human reason such as
"mention 2: start >= end (12 >= 12)"). Offsets are Unicode code points
(Python string indices), end exclusive.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from mel.errors import RecordError
from mel.qids import is_qid, qid_to_int

# The marker that wraps a mention, both inline in input texts and in model inputs.
MENTION_MARKER = "[M]"


def _optional_qid(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not is_qid(value):
        raise RecordError(f"{what} is not a Wikidata item id: {value!r}")
    return value


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (JSON true/false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RecordError(f"field {what!r} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class KBEntity:
    """One knowledge-base entry: the text an entity is encoded from.

    `description` is what the encoder uses (the start of the Wikipedia page
    when the entity has one in this language, else the Wikidata description);
    `wikidata_description` keeps the Wikidata one. `page_text` is the whole
    page, filled only on request (it can be long).
    """

    qid: str
    lang: str
    label: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    has_page: bool = False
    page_title: str | None = None
    wikidata_description: str | None = None
    page_text: str | None = None

    @property
    def qid_int(self) -> int:
        return qid_to_int(self.qid)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "qid": self.qid,
            "lang": self.lang,
            "label": self.label,
            "description": self.description,
            "aliases": list(self.aliases),
        }
        if self.has_page:
            out["has_page"] = True
        for name in ("page_title", "wikidata_description", "page_text"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], default_lang: str | None = None) -> KBEntity:
        """Read a mel KB line; `default_lang` stands in for a missing "lang"."""
        if "qid" not in obj:
            raise RecordError("missing field 'qid'")
        qid = obj["qid"]
        if not is_qid(qid):
            raise RecordError(f"not a Wikidata item id: {qid!r}")
        lang = obj.get("lang", default_lang)
        if not isinstance(lang, str) or not lang:
            if lang is None:
                raise RecordError("missing field 'lang'")
            raise RecordError("field 'lang' must be a non-empty string")
        label = obj.get("label")
        if not isinstance(label, str) or not label.strip():
            raise RecordError("empty label")
        description = obj.get("description") or ""
        if not isinstance(description, str):
            raise RecordError("field 'description' must be a string")
        optional = {}
        for name in ("page_title", "wikidata_description", "page_text"):
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise RecordError(f"field {name!r} must be a string")
            optional[name] = value
        return cls(
            qid=qid,
            lang=lang,
            label=label,
            description=description,
            aliases=_string_list(obj.get("aliases"), "aliases"),
            has_page=obj.get("has_page") is True,
            **optional,
        )


@dataclass(frozen=True)
class Mention:
    """A marked span of a document; `gold_qid` when the input names the answer."""

    start: int
    end: int
    gold_qid: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start, "end": self.end}
        if self.gold_qid is not None:
            out["qid"] = self.gold_qid
        return out

    @classmethod
    def from_json(cls, obj: object, text_length: int, number: int = 1) -> Mention:
        """Validate one input mention (`number` is 1-based, for messages).

        The gold QID is "gold_qid" when present (the output of an earlier run),
        else "qid"; null means no gold.
        """
        where = f"mention {number}"
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: not a JSON object")
        for name in ("start", "end"):
            if name not in obj:
                raise RecordError(f"{where}: missing field {name!r}")
            if not is_int(obj[name]):
                raise RecordError(f"{where}: {name!r} is not an integer: {obj[name]!r}")
        start, end = obj["start"], obj["end"]
        if start >= end:
            raise RecordError(f"{where}: start >= end ({start} >= {end})")
        if start < 0 or end > text_length:
            raise RecordError(
                f"{where}: span {start}-{end} outside text of {text_length} characters"
            )
        gold_field = "gold_qid" if "gold_qid" in obj else "qid"
        gold = _optional_qid(obj.get(gold_field), f"{where}: field {gold_field!r}")
        return cls(start=start, end=end, gold_qid=gold)


def strip_inline_markers(text: str) -> tuple[str, tuple[Mention, ...]]:
    """"a [M]Paris[M] b" -> ("a Paris b", (Mention(2, 7),)).

    The markers are removed and nothing else in the text changes; a span
    leaves out whitespace just inside its markers ("[M] Paris [M]").
    """
    pieces = text.split(MENTION_MARKER)
    markers = len(pieces) - 1
    if markers % 2:
        raise RecordError(f"odd number of {MENTION_MARKER} markers ({markers})")
    clean: list[str] = []
    mentions: list[Mention] = []
    offset = 0
    for index, piece in enumerate(pieces):
        if index % 2:  # between an opening and a closing marker
            inner = piece.strip()
            if not inner:
                raise RecordError(f"inline mention {len(mentions) + 1} is empty")
            start = offset + (len(piece) - len(piece.lstrip()))
            mentions.append(Mention(start, start + len(inner)))
        clean.append(piece)
        offset += len(piece)
    return "".join(clean), tuple(mentions)


@dataclass(frozen=True)
class Document:
    """A document to link: its text and mentions, plus the record it came from.

    `raw` is the input JSON object, kept whole so that output carries every
    input field; `inline` says the mentions came from [M] markers in `raw`'s
    text (then `text` is the text without them).
    """

    id: str | None
    lang: str | None
    text: str
    mentions: tuple[Mention, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    line_no: int | None = None
    inline: bool = False

    def to_json(self) -> dict[str, Any]:
        """The input record (markers turned into a `mentions` list)."""
        if not self.raw:
            out: dict[str, Any] = {}
            if self.id is not None:
                out["id"] = self.id
            if self.lang is not None:
                out["lang"] = self.lang
            out["text"] = self.text
            out["mentions"] = [m.to_json() for m in self.mentions]
            return out
        out = dict(self.raw)
        if self.inline:
            out["text"] = self.text
            out["mentions"] = [m.to_json() for m in self.mentions]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], line_no: int | None = None) -> Document:
        """Validate an input record; raise RecordError with the first problem.

        A record needs "text" and either "mentions" (a list, possibly empty)
        or [M] markers in its text. Overlapping and nested mentions are
        accepted: each mention is encoded on its own, in its own window.
        """
        if not isinstance(obj, dict):
            raise RecordError("not a JSON object")
        if "text" not in obj:
            raise RecordError("missing field 'text'")
        text = obj["text"]
        if not isinstance(text, str):
            raise RecordError("field 'text' is not a string")
        doc_id = obj.get("id")
        if doc_id is not None and not (isinstance(doc_id, str) or is_int(doc_id)):
            raise RecordError("field 'id' must be a string or an integer")
        lang = obj.get("lang")
        if lang is not None and not isinstance(lang, str):
            raise RecordError("field 'lang' must be a string")
        inline = False
        if "mentions" in obj:
            if not isinstance(obj["mentions"], list):
                raise RecordError("field 'mentions' is not a list")
            mentions = tuple(
                Mention.from_json(item, len(text), number)
                for number, item in enumerate(obj["mentions"], start=1)
            )
        elif MENTION_MARKER in text:
            text, mentions = strip_inline_markers(text)
            inline = True
        else:
            raise RecordError(
                f"missing field 'mentions' (and no {MENTION_MARKER} markers in the text)"
            )
        return cls(
            id=None if doc_id is None else str(doc_id),
            lang=lang,
            text=text,
            mentions=mentions,
            raw=dict(obj),
            line_no=line_no,
            inline=inline,
        )


@dataclass(frozen=True)
class TrainingMention:
    """A mention with its gold entity and its context, for training and baselines.

    `text` is the whole context (for DaMuEL, the page text, shared by all the
    page's links); `origin` is where the link comes from ("wiki" for links
    placed by Wikipedia editors); `source` is "file:line".
    """

    qid: str
    lang: str | None
    text: str
    start: int
    end: int
    origin: str | None
    source: str

    @property
    def mention(self) -> str:
        return self.text[self.start : self.end]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TrainingMention:
        qid = obj.get("qid")
        if not is_qid(qid):
            raise RecordError(f"not a Wikidata item id: {qid!r}")
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            raise RecordError("empty text")
        start, end = obj.get("start"), obj.get("end")
        if not (is_int(start) and is_int(end) and 0 <= start < end <= len(text)):
            raise RecordError(f"span {start}-{end} outside text of {len(text)} characters")
        return cls(
            qid=qid,
            lang=obj.get("lang"),
            text=text,
            start=start,
            end=end,
            origin=obj.get("origin"),
            source=str(obj.get("source", "")),
        )


class ProblemKind(enum.Enum):
    """Why a gold mention cannot be linked as given (counted per kind in eval reports)."""

    TEXT_MISSING = "text file missing"
    TEXT_NOT_A_FILE = "text is not a readable file"
    TEXT_NOT_UTF8 = "text is not valid UTF-8"
    BAD_DOCID = "docid is not a file name"
    SPAN_OUTSIDE = "span outside the text"
    SPAN_MISMATCH = "span does not match the text"


@dataclass(frozen=True)
class MentionProblem:
    """A problem's kind, and the message that says exactly what is wrong."""

    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class MewsliMention:
    """One row of a Mewsli-9 mentions.tsv; `problem` says why it cannot be
    used as given (text file missing, span not matching the text), else None.
    `row` is its line in mentions.tsv."""

    docid: str
    position: int
    length: int
    mention: str
    url: str
    lang: str
    qid: str
    qid_in_refs: bool | None
    freq_bin: int | None
    row: int = 0
    problem: MentionProblem | None = None

    @property
    def end(self) -> int:
        return self.position + self.length

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["problem"]
        if self.problem is not None:
            out["problem"] = self.problem.detail
            out["problem_kind"] = self.problem.kind.name
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MewsliMention:
        for name in ("docid", "position", "length", "mention", "qid"):
            if name not in obj:
                raise RecordError(f"missing field {name!r}")
        if not is_qid(obj["qid"]):
            raise RecordError(f"not a Wikidata item id: {obj['qid']!r}")
        fields = {f.name: obj[f.name] for f in dataclasses.fields(cls) if f.name in obj and f.name != "problem"}
        fields.setdefault("url", "")
        fields.setdefault("lang", "")
        fields.setdefault("qid_in_refs", None)
        fields.setdefault("freq_bin", None)
        if obj.get("problem") is not None:
            try:
                kind = ProblemKind[obj.get("problem_kind", "")]
            except KeyError:
                raise RecordError(f"unknown problem_kind {obj.get('problem_kind')!r}") from None
            fields["problem"] = MentionProblem(kind, str(obj["problem"]))
        return cls(**fields)


@dataclass(frozen=True)
class Candidate:
    """A candidate entity: its score, and (from the fused linker) the sources that found it and,
    when asked to explain, its features."""

    qid: str
    score: float
    views: tuple[str, ...] | None = None
    features: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"qid": self.qid, "score": round(float(self.score), 6)}
        if self.views is not None:
            out["views"] = list(self.views)
        if self.features is not None:
            out["features"] = {name: round(float(value), 6) for name, value in self.features.items()}
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Candidate:
        views = obj.get("views")
        return cls(qid=obj["qid"], score=float(obj["score"]), views=None if views is None else tuple(views),
                   features=obj.get("features"))


@dataclass(frozen=True)
class Prediction:
    """The answer for one mention: best QID and score, and the candidates, best first."""

    qid: str | None
    score: float | None
    candidates: tuple[Candidate, ...] = ()

    @classmethod
    def from_candidates(cls, candidates: Sequence[Candidate]) -> Prediction:
        if not candidates:
            return cls(qid=None, score=None, candidates=())
        return cls(qid=candidates[0].qid, score=candidates[0].score, candidates=tuple(candidates))

    def to_json(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "score": None if self.score is None else round(float(self.score), 6),
            "candidates": [c.to_json() for c in self.candidates],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Prediction:
        return cls(
            qid=obj.get("qid"),
            score=obj.get("score"),
            candidates=tuple(Candidate.from_json(c) for c in obj.get("candidates", ())),
        )
