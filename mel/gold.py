"""Gold mentions, read from Mewsli-9 folders, mel documents JSON Lines and (for tuning) DaMuEL
links: what `mel eval`, `mel index tune` and `mel train --eval` rank and count.

Both readers stream one document at a time (`EvalDocument`, its gold mentions). A mention that
cannot be linked (its text missing, its span not spelling it) keeps its place with no span and
says why, so that the evaluation can count it as a miss or leave it out, as asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mel.damuel import is_damuel_part
from mel.documents import BadRecord, read_documents
from mel.errors import InputError
from mel.kb import read_training_mentions
from mel.link_sketch import mention_fingerprint
from mel.mentions import MentionSpan
from mel.mewsli import iter_document_runs, mewsli_languages
from mel.qids import qid_to_int
from mel.records import MentionProblem
from mel.skips import SkipReport
from mel.streams import display_name, is_stdio

MAX_EXAMPLES = 10  # examples of each kind of problem kept for the report
EVAL_KINDS = ("mewsli9", "jsonl")


@dataclass(frozen=True)
class EvalMention:
    """A gold mention to rank: `span` is None when it cannot be linked (`problem` says why)."""

    lang: str
    gold: int  # the gold QID's number
    span: MentionSpan | None
    freq_bin: int | None = None
    qid_in_refs: bool | None = None
    problem: MentionProblem | None = None
    location: str = ""


@dataclass(frozen=True)
class EvalDocument:
    """The gold mentions of one document (rankers may look at a document's other mentions)."""

    mentions: tuple[EvalMention, ...]


@dataclass(frozen=True)
class EvalSpec:
    """A gold set: `mewsli9:DIR` (a dataset folder, or one language folder of it) or
    `jsonl:FILE` (mel documents with gold "qid" on mentions)."""

    kind: str
    path: str

    @classmethod
    def parse(cls, text: str) -> EvalSpec:
        kind, sep, path = text.partition(":")
        if not sep or kind not in EVAL_KINDS or not path:
            raise InputError(f"--eval {text!r}: expected mewsli9:DIR or jsonl:FILE")
        return cls(kind, path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"

def resolve_mewsli(path: str | os.PathLike, langs: Sequence[str] | None) -> tuple[Path, list[str]]:
    """(dataset root, languages): DIR is Mewsli-9's output/dataset or one of its language folders."""
    folder = Path(path)
    if (folder / "mentions.tsv").is_file():
        root, available = folder.parent, [folder.name]
    else:
        root, available = folder, mewsli_languages(folder)
    if not langs:
        return root, available
    missing = [lang for lang in langs if lang not in available]
    if missing:
        raise InputError(f"{folder}: no mentions for language(s) {', '.join(missing)} "
                         f"(found {', '.join(available)})")
    return root, list(dict.fromkeys(langs))


@dataclass
class SourceNotes:
    """What reading the data found besides the mentions (for the report)."""

    documents: int = 0
    md5_mismatches: int = 0
    md5_examples: list[str] = field(default_factory=list)
    without_gold: int = 0


def mewsli_documents(root: Path, langs: Sequence[str], *, report: SkipReport, notes: SourceNotes,
                     check_md5: bool = True) -> Iterator[EvalDocument]:
    """Every document of the languages with its mentions (streamed)."""
    for lang in langs:
        tsv = root / lang / "mentions.tsv"
        for document in iter_document_runs(root, lang, report=report, check_md5=check_md5):
            notes.documents += 1
            if document.text is not None and document.problem is not None:
                notes.md5_mismatches += 1
                if len(notes.md5_examples) < MAX_EXAMPLES:
                    notes.md5_examples.append(f"{root / lang / 'text' / document.docid}: {document.problem}")
            yield EvalDocument(tuple(
                EvalMention(lang=lang, gold=qid_to_int(m.qid),
                            span=None if m.problem is not None else MentionSpan(document.text or "", m.position,
                                                                                  m.end, lang),
                            freq_bin=m.freq_bin, qid_in_refs=m.qid_in_refs, problem=m.problem,
                            location=f"{tsv}:{m.row}")
                for m in document.mentions))


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def jsonl_documents(path: str | os.PathLike, langs: Sequence[str] | None, *, report: SkipReport,
                    notes: SourceNotes) -> Iterator[EvalDocument]:
    """Mentions with a gold QID of mel documents; `freq_bin` and `qid_in_refs`
    are taken from a mention's fields when it has them. A document without
    "lang" is counted under "und"."""
    name = display_name(path)
    wanted = set(langs) if langs else None
    for item in read_documents(path):
        if isinstance(item, BadRecord):
            report.skip(f"{name}:{item.line_no}", item.reason)
            continue
        lang = item.lang or "und"
        if wanted is not None and lang not in wanted:
            report.filter(f"document in language {lang!r} (not selected)")
            continue
        notes.documents += 1
        raw_mentions = item.raw.get("mentions") if not item.inline else None
        mentions = []
        for number, mention in enumerate(item.mentions):
            if mention.gold_qid is None:
                notes.without_gold += 1
                report.filter("mention without a gold qid (not evaluated)")
                continue
            raw = raw_mentions[number] if isinstance(raw_mentions, list) else {}
            in_refs = raw.get("qid_in_refs")
            mentions.append(EvalMention(
                lang=lang, gold=qid_to_int(mention.gold_qid),
                span=MentionSpan(item.text, mention.start, mention.end, item.lang),
                freq_bin=_optional_int(raw.get("freq_bin")),
                qid_in_refs=in_refs if isinstance(in_refs, bool) else None,
                location=f"{name}:{item.line_no}: mention {number + 1}"))
        if mentions:
            yield EvalDocument(tuple(mentions))


def read_gold(spec: EvalSpec, report: SkipReport, notes: SourceNotes | None = None,
              langs: Sequence[str] | None = None) -> Iterator[EvalDocument]:
    """The documents of a gold set named by an EvalSpec (for `mel train --eval`)."""
    notes = notes if notes is not None else SourceNotes()
    if spec.kind == "mewsli9":
        root, chosen = resolve_mewsli(spec.path, langs)
        return mewsli_documents(root, chosen, report=report, notes=notes)
    if not is_stdio(spec.path) and not Path(spec.path).is_file():
        raise InputError(f"--eval {spec}: file not found")
    return jsonl_documents(spec.path, langs, report=report, notes=notes)


def gold_fingerprints(mentions: Iterable[EvalMention]) -> np.ndarray:
    """The link fingerprints (mel.link_sketch) of the linkable gold mentions, to compare with the
    training links of an index's alias table and with the gold a reranker was fitted on."""
    return np.array([mention_fingerprint(m.span.text, m.span.start, m.span.end, m.gold)
                     for m in mentions if m.span is not None], dtype=np.uint64)


def gold_documents(path: str, report: SkipReport) -> list[EvalDocument]:
    """Gold documents from mel documents JSON Lines, a Mewsli-9 folder, or DaMuEL links (a part's pages),
    told apart by what the path is (`mel index tune --gold`)."""
    folder = Path(path)
    notes = SourceNotes()
    if folder.is_dir() and (is_damuel_part(folder) or any(is_damuel_part(p) for p in folder.iterdir())):
        return _damuel_documents(path, report)
    if folder.is_dir():
        root, langs = resolve_mewsli(folder, None)
        return list(mewsli_documents(root, langs, report=report, notes=notes))
    return list(jsonl_documents(path, None, report=report, notes=notes))


def _damuel_documents(path: str, report: SkipReport) -> list[EvalDocument]:
    """A page's wiki-origin links as one gold document."""
    out: list[EvalDocument] = []
    page: list[EvalMention] = []
    current = None
    for mention in read_training_mentions([path], report=report):
        if mention.source != current and page:
            out.append(EvalDocument(tuple(page)))
            page = []
        current = mention.source
        page.append(EvalMention(lang=mention.lang or "und", gold=qid_to_int(mention.qid),
                                span=MentionSpan(mention.text, mention.start, mention.end, mention.lang),
                                location=mention.source))
    if page:
        out.append(EvalDocument(tuple(page)))
    return out
