"""Mewsli-9 reader: mentions with their article text, one document at a time.

Layout (as made by the dataset's get-mewsli-9.sh, under output/dataset):

    <lang>/docs.tsv       docid, title, curid, revid, url, text_md5
    <lang>/mentions.tsv   docid, position, length, mention, url, lang, qid, qid_in_refs, freq_bin
    <lang>/text/<docid>   clean article text (UTF-8)

The TSV files were written by pandas `to_csv(sep="\\t")`: fields holding a tab,
a quote or a line break are quoted with '"' and inner quotes doubled; they are
read back exactly so (`split_tsv_record`). A line that starts no such record
(a quote never closed, text after a closing quote) is reported and reading
goes on at the next line: every line is a row's, a reported problem or a
counted blank line. Columns are found by header name.
position/length count Unicode code points (astral characters count one), and
the text is read as bytes and decoded, never with newline translation, so
"\\r\\n" counts two characters as in the dataset's own check.

Mentions whose text is missing or whose span does not spell the mention are
kept, with `problem` set, so that an evaluation can count them; malformed
rows are skipped and counted in a SkipReport.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mel.artifacts import sha256_file
from mel.errors import InputError
from mel.qids import is_qid
from mel.records import Document, Mention, MentionProblem, MewsliMention, ProblemKind
from mel.skips import SkipReport
from mel.streams import UTF8_BOM

REQUIRED_MENTION_COLUMNS = ("docid", "position", "length", "mention", "qid")


@dataclass(frozen=True)
class MewsliDocument:
    """One article and its mentions. `text` is None when it could not be read
    (see `problem`); `problem` also notes a text that differs from docs.tsv's
    checksum, in which case the mentions were still checked one by one."""

    lang: str
    docid: str
    text: str | None
    mentions: tuple[MewsliMention, ...]
    title: str | None = None
    problem: str | None = None

    def as_document(self) -> Document:
        """A mel Document with the usable mentions (no `problem`), gold QIDs set."""
        usable = tuple(
            Mention(m.position, m.end, m.qid) for m in self.mentions if m.problem is None
        )
        return Document(id=self.docid, lang=self.lang, text=self.text or "", mentions=usable)


def mewsli_languages(root: str | os.PathLike) -> list[str]:
    """The language folders under a Mewsli-9 dataset folder (those with mentions.tsv)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected Mewsli-9's output/dataset)")
    langs = sorted(p.name for p in root.iterdir() if (p / "mentions.tsv").is_file())
    if not langs:
        raise InputError(
            f"{root}: no <lang>/mentions.tsv inside (expected Mewsli-9's output/dataset)"
        )
    return langs


# pandas quotes a field holding a line break, so a record may span lines; a quote left open
# (hand-edited files) would otherwise swallow the rest of the file into one field.
_MAX_RECORD_LINES = 100


class _Unclosed(ValueError):
    """A quoted field is still open at the end of the text given."""


def split_tsv_record(record: str) -> list[str]:
    """The fields of one record as pandas `to_csv(sep="\\t")` (csv.QUOTE_MINIMAL) writes
    it: a field holding a tab, a quote or a line break is quoted with '"', inner quotes
    doubled; other fields are as they are. ValueError for text no such writer makes."""
    fields: list[str] = []
    i, n = 0, len(record)
    while True:
        if not record.startswith('"', i):
            j = record.find("\t", i)
            if j < 0:
                fields.append(record[i:])
                return fields
            fields.append(record[i:j])
            i = j + 1
            continue
        pieces, i = [], i + 1
        while True:
            j = record.find('"', i)
            if j < 0:
                raise _Unclosed(f"field {len(fields) + 1} opens a quote that is never closed")
            pieces.append(record[i:j])
            if not record.startswith('"', j + 1):
                break
            pieces.append('"')
            i = j + 2
        fields.append("".join(pieces))
        i = j + 1
        if i == n:
            return fields
        if record[i] != "\t":
            raise ValueError(f"text after the closing quote of field {len(fields)}")
        i += 1


def _record_fields(taken: list[tuple[int, bytes]]) -> list[str]:
    data = b"".join(raw for _, raw in taken)
    if taken[0][0] == 1 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 at byte offset {exc.start} of the line ({exc.reason})") from None
    return split_tsv_record(text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text)


def _tsv_records(handle) -> Iterator[tuple[int, list[str] | str]]:
    """(first line, fields) per record, or (line, reason) for a line that starts no valid
    record; reading goes on at the next line, so every line is a record's or reported."""
    pending: deque[tuple[int, bytes]] = deque()
    source = enumerate(handle, start=1)
    while True:
        first = pending.popleft() if pending else next(source, None)
        if first is None:
            return
        taken = [first]
        while True:
            try:
                fields = _record_fields(taken)
            except _Unclosed as exc:
                more = pending.popleft() if pending else next(source, None)
                if more is not None and len(taken) < _MAX_RECORD_LINES:
                    taken.append(more)  # a quoted line break: the record goes on
                    continue
                if more is not None:
                    pending.appendleft(more)
                reason = str(exc)
            except ValueError as exc:
                reason = str(exc)
            else:
                yield taken[0][0], fields
                break
            yield taken[0][0], reason
            pending.extendleft(reversed(taken[1:]))  # read again: each may start a record
            break


def _tsv_rows(path: Path, required: Sequence[str], report: SkipReport) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row as {column: value}) per data row. Malformed rows are skipped and blank
    lines left out, both counted in `report`; header problems raise InputError."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    with handle:
        records = _tsv_records(handle)
        _, header = next(records, (0, None))
        if header is None:
            raise InputError(f"{path}: empty file (expected a header line)")
        if isinstance(header, str):
            raise InputError(f"{path}:1: malformed header ({header})")
        missing = [name for name in required if name not in header]
        if missing:
            raise InputError(f"{path}:1: missing column(s) {', '.join(missing)} in header {header}")
        for line, fields in records:
            if isinstance(fields, str):
                report.skip(f"{path}:{line}", "malformed row", fields)
            elif fields == [""]:
                report.filter(f"blank line in {path.name}")
            elif len(fields) != len(header):
                report.skip(f"{path}:{line}", "malformed row", f"expected {len(header)} fields, found {len(fields)}")
            else:
                yield line, dict(zip(header, fields))


def _parse_bool(value: str) -> bool | None:
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    raise ValueError(f"qid_in_refs is not True or False: {value!r}")


def _parse_count(value: str, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} is not an integer: {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} is less than {minimum}: {number}")
    return number


def read_mentions_tsv(
    path: str | os.PathLike, lang: str, report: SkipReport | None = None
) -> Iterator[MewsliMention]:
    """The rows of one mentions.tsv, in file order; `lang` fills a missing lang column."""
    path = Path(path)
    report = report if report is not None else SkipReport()
    for line, row in _tsv_rows(path, REQUIRED_MENTION_COLUMNS, report):
        location = f"{path}:{line}"
        try:
            position = _parse_count(row["position"], "position", 0)
            length = _parse_count(row["length"], "length", 1)
            freq_bin = row.get("freq_bin", "")
            mention = MewsliMention(
                docid=row["docid"],
                position=position,
                length=length,
                mention=row["mention"],
                url=row.get("url", ""),
                lang=row.get("lang") or lang,
                qid=row["qid"],
                qid_in_refs=_parse_bool(row.get("qid_in_refs", "")),
                freq_bin=None if freq_bin == "" else _parse_count(freq_bin, "freq_bin", 0),
                row=line,
            )
        except ValueError as exc:
            report.skip(location, "malformed row", str(exc))
            continue
        if not mention.docid:
            report.skip(location, "malformed row", "empty docid")
        elif not is_qid(mention.qid):
            report.skip(location, "not a Wikidata item id", repr(mention.qid))
        else:
            yield mention


def read_docs_tsv(
    path: str | os.PathLike, report: SkipReport | None = None
) -> dict[str, dict[str, str]]:
    """docid -> its docs.tsv row (a few thousand rows per language)."""
    path = Path(path)
    report = report if report is not None else SkipReport()
    docs: dict[str, dict[str, str]] = {}
    for _, row in _tsv_rows(path, ("docid",), report):
        docs[row["docid"]] = row
    return docs


def _read_text(text_dir: Path, docid: str) -> tuple[str | None, bytes | None, MentionProblem | None]:
    """(text, raw bytes, problem)."""
    if not docid or "/" in docid or "\\" in docid or docid in (".", ".."):
        return None, None, MentionProblem(ProblemKind.BAD_DOCID, f"docid {docid!r} is not a file name")
    path = text_dir / docid
    try:
        # Checked first: opening a FIFO would wait for a writer forever.
        if not stat.S_ISREG(path.stat().st_mode):
            kind = "a folder" if path.is_dir() else "not a regular file"
            return None, None, MentionProblem(ProblemKind.TEXT_NOT_A_FILE, f"text is {kind}")
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None, MentionProblem(ProblemKind.TEXT_MISSING, "text file missing")
    except OSError as exc:  # no permission, an I/O error: not a text we can read
        reason = exc.strerror or type(exc).__name__
        return None, None, MentionProblem(ProblemKind.TEXT_NOT_A_FILE, f"text is not a readable file ({reason})")
    try:
        return data.decode("utf-8"), data, None
    except UnicodeDecodeError as exc:
        return None, data, MentionProblem(ProblemKind.TEXT_NOT_UTF8,
                                          f"text is not valid UTF-8 (byte offset {exc.start})")


def _check_span(mention: MewsliMention, text: str) -> MentionProblem | None:
    if mention.end > len(text):
        return MentionProblem(ProblemKind.SPAN_OUTSIDE,
                              f"span {mention.position}-{mention.end} outside text of {len(text)} characters")
    found = text[mention.position : mention.end]
    if found != mention.mention:
        return MentionProblem(ProblemKind.SPAN_MISMATCH,
                              f"text at {mention.position}-{mention.end} is {found!r}, not {mention.mention!r}")
    return None


def iter_documents(
    root: str | os.PathLike,
    lang: str,
    *,
    report: SkipReport | None = None,
    check_md5: bool = True,
) -> Iterator[MewsliDocument]:
    """Documents of one language in mentions.tsv order, each with its mentions
    checked against its text. Only one text is held at a time (the mention
    rows of the language, about 80 k at most, are held to group them)."""
    folder = Path(root) / lang
    report = report if report is not None else SkipReport()
    by_doc: OrderedDict[str, list[MewsliMention]] = OrderedDict()
    for mention in read_mentions_tsv(folder / "mentions.tsv", lang, report):
        by_doc.setdefault(mention.docid, []).append(mention)
    docs = _docs_of(folder, report)
    for docid, mentions in by_doc.items():
        yield _checked_document(folder, lang, docid, mentions, docs.get(docid, {}), check_md5)


def iter_document_runs(
    root: str | os.PathLike,
    lang: str,
    *,
    report: SkipReport | None = None,
    check_md5: bool = True,
) -> Iterator[MewsliDocument]:
    """Like `iter_documents`, but streaming: one document per run of
    consecutive mentions.tsv rows with the same docid, so memory holds one
    document whatever the file's size. Every mention comes exactly once; a
    docid whose rows are not contiguous comes as several documents (its text
    is read once per run). The dataset's files are grouped by docid."""
    folder = Path(root) / lang
    report = report if report is not None else SkipReport()
    docs = _docs_of(folder, report)
    run: list[MewsliMention] = []
    for mention in read_mentions_tsv(folder / "mentions.tsv", lang, report):
        if run and mention.docid != run[0].docid:
            yield _checked_document(folder, lang, run[0].docid, run, docs.get(run[0].docid, {}), check_md5)
            run = []
        run.append(mention)
    if run:
        yield _checked_document(folder, lang, run[0].docid, run, docs.get(run[0].docid, {}), check_md5)


def _docs_of(folder: Path, report: SkipReport) -> dict[str, dict[str, str]]:
    docs_path = folder / "docs.tsv"
    return read_docs_tsv(docs_path, report) if docs_path.is_file() else {}


def _checked_document(folder: Path, lang: str, docid: str, mentions: Sequence[MewsliMention],
                      info: dict[str, str], check_md5: bool) -> MewsliDocument:
    text, data, text_problem = _read_text(folder / "text", docid)
    problem = None if text_problem is None else text_problem.detail
    if text is None:
        checked = tuple(_with_problem(m, text_problem) for m in mentions)
    else:
        checked = tuple(_with_problem(m, _check_span(m, text)) for m in mentions)
        expected_md5 = info.get("text_md5")
        if check_md5 and expected_md5 and data is not None and hashlib.md5(data).hexdigest() != expected_md5:
            problem = "text differs from the one in docs.tsv (text_md5 mismatch)"
    return MewsliDocument(
        lang=lang,
        docid=docid,
        text=text,
        mentions=checked,
        title=info.get("title"),
        problem=problem,
    )


def _with_problem(mention: MewsliMention, problem: MentionProblem | None) -> MewsliMention:
    if problem is None:
        return mention
    return dataclasses.replace(mention, problem=problem)


def mentions_checksums(
    root: str | os.PathLike, langs: Sequence[str] | None = None
) -> dict[str, str]:
    """lang -> sha256 of its mentions.tsv, for evaluation reports."""
    langs = list(langs) if langs is not None else mewsli_languages(root)
    out = {}
    for lang in langs:
        path = Path(root) / lang / "mentions.tsv"
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        out[lang] = sha256_file(path)
    return out
