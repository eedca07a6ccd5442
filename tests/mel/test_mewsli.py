import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from mel.errors import InputError
from mel.mewsli import (
    iter_documents,
    mentions_checksums,
    mewsli_languages,
    read_docs_tsv,
    read_mentions_tsv,
)
from mel.records import MewsliMention, ProblemKind
from mel.skips import SkipReport

DATA = Path(__file__).resolve().parents[1] / "data"
MEWSLI = DATA / "mewsli"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEADER = "docid\tposition\tlength\tmention\turl\tlang\tqid\tqid_in_refs\tfreq_bin\n"


def _docs(root=MEWSLI, lang="es", **options):
    return {doc.docid: doc for doc in iter_documents(root, lang, **options)}


def test_languages_and_checksums():
    assert mewsli_languages(MEWSLI) == ["es"]
    expected = hashlib.sha256((MEWSLI / "es" / "mentions.tsv").read_bytes()).hexdigest()
    assert mentions_checksums(MEWSLI) == {"es": expected}
    with pytest.raises(InputError, match="no <lang>/mentions.tsv"):
        mewsli_languages(DATA / "damuel")


def test_mentions_tsv_rows_with_quoted_fields():
    rows = list(read_mentions_tsv(MEWSLI / "es" / "mentions.tsv", "es"))
    assert [m.mention for m in rows] == ["Francia", '"Le Monde"', "Ciudad de\tMéxico", "Berlín", "Alemania", "Madrid"]
    first = rows[0]
    assert first == MewsliMention(
        docid="es-1", position=20, length=7, mention="Francia",
        url="http://es.wikipedia.org/wiki/Francia", lang="es", qid="Q142",
        qid_in_refs=True, freq_bin=5, row=2,
    )
    assert rows[1].url == 'http://es.wikipedia.org/wiki/"Le_Monde"'
    assert rows[5].qid_in_refs is False and rows[5].freq_bin == 0
    assert [m.row for m in rows] == [2, 3, 4, 5, 6, 7]


def test_documents_with_their_checked_mentions():
    docs = _docs()
    assert list(docs) == ["es-1", "es-2", "es-3"]
    es1 = docs["es-1"]
    assert es1.problem is None and es1.title == "Noticia 1"
    assert all(m.problem is None for m in es1.mentions)
    # the flag before "Francia" is two astral code points; "\r\n" counts two characters
    assert es1.text[:20] == "El presidente de 🇫🇷 "
    assert "\r\n" in es1.text
    assert [es1.text[m.position : m.end] for m in es1.mentions] == [m.mention for m in es1.mentions]


def test_problems_are_flagged_not_dropped():
    docs = _docs()
    es2 = docs["es-2"]
    assert [m.problem and str(m.problem) for m in es2.mentions] == [None, "text at 31-39 is ' Alemani', not 'Alemania'"]
    assert es2.mentions[1].problem.kind is ProblemKind.SPAN_MISMATCH
    es3 = docs["es-3"]
    assert es3.text is None and es3.problem == "text file missing"
    assert [(m.problem.kind, str(m.problem)) for m in es3.mentions] == [(ProblemKind.TEXT_MISSING, "text file missing")]
    document = es2.as_document()
    assert [(document.text[m.start : m.end], m.gold_qid) for m in document.mentions] == [("Berlín", "Q64")]
    assert document.id == "es-2" and document.lang == "es"


def _copy_mewsli(tmp_path):
    root = tmp_path / "dataset"
    shutil.copytree(MEWSLI, root)
    return root


def test_text_md5_mismatch_is_noted(tmp_path):
    root = _copy_mewsli(tmp_path)
    path = root / "es" / "text" / "es-1"
    path.write_bytes(path.read_bytes() + b" Fin.")
    es1 = _docs(root)["es-1"]
    assert es1.problem == "text differs from the one in docs.tsv (text_md5 mismatch)"
    assert all(m.problem is None for m in es1.mentions)  # spans still match
    assert _docs(root, check_md5=False)["es-1"].problem is None


def test_text_that_is_not_utf8_is_flagged(tmp_path):
    root = _copy_mewsli(tmp_path)
    (root / "es" / "text" / "es-2").write_bytes(b"Berl\xedn")
    es2 = _docs(root)["es-2"]
    assert es2.text is None and es2.problem == "text is not valid UTF-8 (byte offset 4)"
    assert {str(m.problem) for m in es2.mentions} == {es2.problem}
    assert {m.problem.kind for m in es2.mentions} == {ProblemKind.TEXT_NOT_UTF8}


def test_span_past_the_end_of_the_text(tmp_path):
    root = tmp_path / "dataset"
    (root / "xx" / "text").mkdir(parents=True)
    (root / "xx" / "text" / "d1").write_text("short", encoding="utf-8")
    (root / "xx" / "mentions.tsv").write_text(HEADER + "d1\t3\t5\tort..\tu\txx\tQ1\tTrue\t1\n", encoding="utf-8")
    (doc,) = iter_documents(root, "xx")
    assert str(doc.mentions[0].problem) == "span 3-8 outside text of 5 characters"
    assert doc.mentions[0].problem.kind is ProblemKind.SPAN_OUTSIDE


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    root = tmp_path / "dataset"
    (root / "xx" / "text").mkdir(parents=True)
    (root / "xx" / "text" / "d1").write_text("Roma y París", encoding="utf-8")
    (root / "xx" / "mentions.tsv").write_text(
        HEADER
        + "d1\t0\t4\tRoma\tu\txx\tQ220\tTrue\t3\n"  # line 2
        + "d1\tzero\t4\tRoma\tu\txx\tQ220\tTrue\t3\n"  # line 3
        + "d1\t7\t5\tParís\tu\txx\tP90\tTrue\t3\n"  # line 4
        + "d1\t7\t5\tParís\tu\txx\n"  # line 5
        + "d1\t7\t0\tParís\tu\txx\tQ90\tTrue\t3\n"  # line 6
        + "d1\t7\t5\tParís\tu\txx\tQ90\tyes\t3\n"  # line 7
        + "\n"  # line 8: blank
        + "d1\t7\t5\tParís\tu\txx\tQ90\tFalse\t\n",  # line 9
        encoding="utf-8",
    )
    report = SkipReport(max_examples=10)
    (doc,) = iter_documents(root, "xx", report=report)
    assert [(m.mention, m.row, m.freq_bin) for m in doc.mentions] == [("Roma", 2, 3), ("París", 9, None)]
    assert report.skipped == {"malformed row": 4, "not a Wikidata item id": 1}
    assert report.filtered == {"blank line in mentions.tsv": 1}  # line 8: every line is accounted for
    path = root / "xx" / "mentions.tsv"
    assert report.examples == [
        f"{path}:3: malformed row (position is not an integer: 'zero')",
        f"{path}:4: not a Wikidata item id ('P90')",
        f"{path}:5: malformed row (expected 9 fields, found 6)",
        f"{path}:6: malformed row (length is less than 1: 0)",
        f"{path}:7: malformed row (qid_in_refs is not True or False: 'yes')",
    ]
    with pytest.raises(InputError, match=r"mentions\.tsv:3: malformed row"):
        list(iter_documents(root, "xx", report=SkipReport(strict=True)))


def test_columns_are_found_by_name_and_line_numbers_survive_quoted_newlines(tmp_path):
    root = tmp_path / "dataset"
    (root / "xx" / "text").mkdir(parents=True)
    text = "A\nB said \"x\ty\" then C.\n"
    (root / "xx" / "text" / "d1").write_text(text, encoding="utf-8", newline="")
    with open(root / "xx" / "mentions.tsv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["qid", "mention", "length", "position", "docid"])  # another order, fewer columns
        writer.writerow(["Q1", "A\nB", 3, 0, "d1"])  # lines 2-3
        writer.writerow(["Q2", '"x\ty"', 5, text.index('"x'), "d1"])  # line 4
        writer.writerow(["Q3", "C", 1, text.index("C"), "d1"])  # line 5
    (doc,) = iter_documents(root, "xx")
    assert [(m.qid, m.mention, m.row, m.problem) for m in doc.mentions] == [
        ("Q1", "A\nB", 2, None),
        ("Q2", '"x\ty"', 4, None),
        ("Q3", "C", 5, None),
    ]
    assert doc.mentions[0].lang == "xx" and doc.mentions[0].freq_bin is None


def test_missing_columns_are_an_error(tmp_path):
    path = tmp_path / "mentions.tsv"
    path.write_text("docid\tposition\tmention\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mentions\.tsv:1: missing column\(s\) length, qid"):
        list(read_mentions_tsv(path, "xx"))
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        list(read_mentions_tsv(path, "xx"))
    with pytest.raises(InputError, match="file not found"):
        list(read_mentions_tsv(tmp_path / "none.tsv", "xx"))


def test_docs_tsv():
    docs = read_docs_tsv(MEWSLI / "es" / "docs.tsv")
    assert list(docs) == ["es-1", "es-2", "es-3"]
    assert docs["es-2"]["title"] == "Noticia 2" and docs["es-2"]["curid"] == "2"


def test_mention_json_round_trip():
    mention = next(iter(_docs()["es-2"].mentions[1:]))
    assert MewsliMention.from_json(mention.to_json()) == mention
    assert mention.to_json()["problem"].startswith("text at 31-39")


def test_the_pandas_quoting_is_read_exactly():
    from mel.mewsli import split_tsv_record

    assert split_tsv_record('a\t"b\tc"\t"""q"" d"\t\t') == ["a", "b\tc", '"q" d', "", ""]
    assert split_tsv_record('x "y" z\tw') == ['x "y" z', "w"]  # a quote inside a field is just a character
    with pytest.raises(ValueError, match="text after the closing quote of field 2"):
        split_tsv_record('a\t"b"c\td')
    with pytest.raises(ValueError, match="field 2 opens a quote that is never closed"):
        split_tsv_record('a\t"b\tc')


def test_an_unclosed_quote_is_one_reported_line_and_every_line_is_accounted_for(tmp_path):
    rows = [f"d1\t{i}\t1\tx\tu\txx\tQ{i + 1}\tTrue\t1\n" for i in range(90)]
    rows[38] = rows[38].replace("\tx\t", '\t"x\t')  # line 40: a quote that is never closed
    path = tmp_path / "mentions.tsv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    report = SkipReport()
    mentions = list(read_mentions_tsv(path, "xx", report))
    assert [m.row for m in mentions] == [n for n in range(2, 92) if n != 40]  # it used to stop at line 40
    assert report.examples == [f"{path}:40: malformed row (field 4 opens a quote that is never closed)"]
    assert len(mentions) + report.total_skipped == 90


def test_blank_and_undecodable_lines_are_counted_too(tmp_path):
    path = tmp_path / "mentions.tsv"
    good, bad = "d1\t0\t1\tx\tu\txx\tQ1\tTrue\t1\n", b"d1\t0\t1\t\xff\tu\txx\tQ2\tTrue\t1\n"
    path.write_bytes((HEADER + good + "\n").encode() + bad)
    report = SkipReport()
    assert [m.qid for m in read_mentions_tsv(path, "xx", report)] == ["Q1"]
    assert report.filtered == {"blank line in mentions.tsv": 1}
    assert report.examples == [f"{path}:4: malformed row (invalid UTF-8 at byte offset 7 of the line "
                               "(invalid start byte))"]


@pytest.fixture(scope="module")
def aliases(tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from mel.cli import main

    out = tmp_path_factory.mktemp("aliases") / "table"
    assert CliRunner().invoke(main, ["alias", "build", "--links", str(DATA / "docs.jsonl"), "-o", str(out),
                                     "-q"]).exit_code == 0
    return out


def eval_sample(root: Path, aliases: Path, tmp_path: Path) -> tuple[int, dict, str]:
    from click.testing import CliRunner

    from mel.cli import main

    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "mewsli9", str(root), "--langs", "en", "--method", "alias",
                                       "--aliases", str(aliases), "--report", str(report), "-q"])
    return result.exit_code, json.loads(report.read_text()) if report.exists() else {}, result.output


def test_mel_eval_counts_every_mention_of_a_file_with_an_unclosed_quote(aliases, tmp_path):
    root = tmp_path / "sample"
    shutil.copytree(EXAMPLES / "mewsli9-sample", root)
    path = root / "en" / "mentions.tsv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 91
    fields = lines[39].split("\t")
    fields[3] = '"' + fields[3]
    lines[39] = "\t".join(fields)
    path.write_text("".join(lines), encoding="utf-8")
    code, report, output = eval_sample(root, aliases, tmp_path)
    assert code == 0, output
    assert report["results"]["en"]["mentions"] == 89  # it used to be 39: 51 mentions vanished
    assert report["source"]["skipped"] == {"malformed row": 1}
    assert report["source"]["examples"] == [f"{path}:40: malformed row (field 4 opens a quote that is never closed)"]


def test_a_text_that_is_a_folder_or_a_fifo_is_a_reported_problem(aliases, tmp_path):
    root = tmp_path / "sample"
    shutil.copytree(EXAMPLES / "mewsli9-sample", root)
    for docid, make in (("en-1", os.mkdir), ("en-2", os.mkfifo)):
        (root / "en" / "text" / docid).unlink()
        make(root / "en" / "text" / docid)
    expected = sum(line.split("\t")[0] in ("en-1", "en-2")
                   for line in (root / "en" / "mentions.tsv").read_text(encoding="utf-8").splitlines())
    code, report, output = eval_sample(root, aliases, tmp_path)  # a folder used to be a traceback, a FIFO a hang
    assert code == 0, output
    assert report["results"]["en"]["mentions"] == 90
    assert report["unlinkable_mentions"]["by_kind"] == {"text is not a readable file": expected}
    examples = report["unlinkable_mentions"]["examples"]
    assert any(e.endswith("text is a folder") for e in examples)
    assert any(e.endswith("text is not a regular file") for e in examples)
