"""Mewsli-9 reader: mentions with their article text, one document at a time.

Layout (as made by the dataset's get-mewsli-9.sh, under output/dataset):

    <lang>/docs.tsv       docid, title, curid, revid, url, text_md5
    <lang>/mentions.tsv   docid, position, length, mention, url, lang, qid, qid_in_refs, freq_bin
    <lang>/text/<docid>   clean article text (UTF-8)

The TSV files were written by pandas `to_csv(sep="\\t")`: fields holding a tab,
a quote or a line break are quoted with '"' and inner quotes doubled, which
Python's csv module reads back exactly. Columns are found by header name.
position/length count Unicode code points (astral characters count one), and
the text is read as bytes and decoded, never with newline translation, so
"\\r\\n" counts two characters as in the dataset's own check.

Mentions whose text is missing or whose span does not spell the mention are
kept, with `problem` set, so that an evaluation can count them; malformed
rows are skipped and counted in a SkipReport.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mel.artifacts import sha256_file
from mel.errors import InputError
from mel.qids import is_qid
from mel.records import Document, Mention, MentionProblem, MewsliMention, ProblemKind
from mel.streams import SkipReport

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


def _tsv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, row as {column: value}) per data row, or (line, reason) for a
    row with the wrong number of fields. Header problems raise InputError."""
    try:
        handle = open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    with handle:
        reader = csv.reader(handle, delimiter="\t", quotechar='"', doublequote=True)
        line = 0
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (expected a header line)")
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            missing = [name for name in required if name not in header]
            if missing:
                raise InputError(
                    f"{path}:1: missing column(s) {', '.join(missing)} in header {header}"
                )
            line = reader.line_num
            for fields in reader:
                row_line, line = line + 1, reader.line_num
                if not fields:
                    continue
                if len(fields) != len(header):
                    yield row_line, f"expected {len(header)} fields, found {len(fields)}"
                    continue
                yield row_line, dict(zip(header, fields))
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: invalid UTF-8 after line {line} ({exc.reason})") from None
        except csv.Error as exc:
            raise InputError(f"{path}:{line + 1}: malformed TSV ({exc})") from None


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
    for line, row in _tsv_rows(path, REQUIRED_MENTION_COLUMNS):
        location = f"{path}:{line}"
        if isinstance(row, str):
            report.skip(location, "malformed row", row)
            continue
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
    for line, row in _tsv_rows(path, ("docid",)):
        if isinstance(row, str):
            report.skip(f"{path}:{line}", "malformed row", row)
        else:
            docs[row["docid"]] = row
    return docs


def _read_text(text_dir: Path, docid: str) -> tuple[str | None, bytes | None, MentionProblem | None]:
    """(text, raw bytes, problem)."""
    if not docid or "/" in docid or "\\" in docid or docid in (".", ".."):
        return None, None, MentionProblem(ProblemKind.BAD_DOCID, f"docid {docid!r} is not a file name")
    try:
        data = (text_dir / docid).read_bytes()
    except FileNotFoundError:
        return None, None, MentionProblem(ProblemKind.TEXT_MISSING, "text file missing")
    except OSError as exc:  # a folder, a device, no permission: not a text we can read
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
