"""mel documents JSON Lines: the input of `mel link`, and its output records.

Input, one document a line (a file, .zst/.xz/.gz, or "-" for stdin):

    {"id": "d1", "lang": "es", "text": "...", "mentions": [{"start": 10, "end": 16}]}

start/end are Unicode code-point offsets, end exclusive; a mention may carry a
gold "qid". A record without "mentions" may mark its mentions inline,
"... the [M]kanclerz[M] declared ...". Overlapping and nested mentions are
accepted (each mention is encoded on its own), and so are duplicates.

Parsing never raises on a bad record: each line gives a `Document` or a
`BadRecord` whose `reason` says what is wrong ("mention 2: span 40-45 outside
text of 30 characters"); `message` adds the line ("line 9: ..."). Blank lines
are not records and are passed over.

Output, one record per input record, in input order:
- a document: the input record with every field as it was; each mention gains
  "qid", "score" and "candidates" ([{"qid", "score"}], best first), and an
  input "qid" becomes "gold_qid" (a mention that already has "gold_qid", from
  an earlier run, keeps it and its old prediction is replaced). Inline-marker
  input comes out with the text without markers and a "mentions" list.
- a bad record that is a JSON object: that object unchanged plus "error";
  any other bad line: {"line": n, "raw": "<the line>", "error": "<reason>"},
  with undecodable bytes shown as \\xNN escapes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mel.records import Document, Prediction, RecordError
from mel.streams import MAX_JSON_DEPTH, BadLine, iter_lines, nested_deeper_than, parse_json_object


@dataclass(frozen=True)
class BadRecord:
    """An input line that cannot be linked, and why; `obj` is the parsed
    JSON object when the line was one."""

    line_no: int
    raw: bytes
    reason: str
    obj: dict | None = None
    source: str | None = None  # the input's name in messages, when there are several inputs

    @property
    def message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}line {self.line_no}: {self.reason}"


def parse_document_line(line: bytes, line_no: int, source: str | None = None) -> Document | BadRecord:
    """Parse one input line; never raises for bad input."""
    try:
        obj = parse_json_object(line)
    except BadLine as exc:
        return BadRecord(line_no, line, str(exc), source=source)
    # A record nested too deeply to be written back is a bad line, passed through as its
    # raw text (counting brackets first keeps the full check off ordinary lines).
    if line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH and nested_deeper_than(obj):
        return BadRecord(line_no, line, f"nested deeper than {MAX_JSON_DEPTH} levels (mel cannot write it back)",
                         source=source)
    return parse_document_object(obj, line_no, line, source)


def parse_document_object(obj: dict, line_no: int, raw: bytes = b"", source: str | None = None
                          ) -> Document | BadRecord:
    """A Document, or the BadRecord saying why `obj` is not one; never raises for bad input."""
    try:
        return Document.from_json(obj, line_no=line_no)
    except RecordError as exc:
        return BadRecord(line_no, raw, str(exc), obj, source)


def read_documents(path: str | os.PathLike, source: str | None = None) -> Iterator[Document | BadRecord]:
    """Yield a Document or a BadRecord for each non-blank line of `path` (`source` names it in messages)."""
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        yield parse_document_line(line, line_no, source)


def linked_record(doc: Document, predictions: Sequence[Prediction | None]) -> dict[str, Any]:
    """The output record of a linked document (one prediction per mention,
    in the document's mention order; None for a mention left unanswered)."""
    if len(predictions) != len(doc.mentions):
        raise ValueError(
            f"{len(predictions)} predictions for {len(doc.mentions)} mentions"
            f" of document {doc.id!r}"
        )
    out = doc.to_json()
    out["mentions"] = [
        _linked_mention(dict(mention), prediction)
        for mention, prediction in zip(out.get("mentions", []), predictions)
    ]
    return out


def _linked_mention(mention: dict[str, Any], prediction: Prediction | None) -> dict[str, Any]:
    if "gold_qid" not in mention and "qid" in mention:
        mention["gold_qid"] = mention.pop("qid")
    answer = (prediction or Prediction(qid=None, score=None)).to_json()
    mention.update(answer)
    return mention


def error_record(bad: BadRecord) -> dict[str, Any]:
    """The output record that stands for a bad input record."""
    if bad.obj is not None:
        out = dict(bad.obj)
        out["error"] = bad.reason
        return out
    return {
        "line": bad.line_no,
        "raw": bad.raw.decode("utf-8", errors="backslashreplace"),
        "error": bad.reason,
    }


def output_record(
    item: Document | BadRecord, predictions: Sequence[Prediction | None] = ()
) -> dict[str, Any]:
    """`linked_record` for a Document, `error_record` for a BadRecord."""
    if isinstance(item, BadRecord):
        return error_record(item)
    return linked_record(item, predictions)
