import pytest

from mel.errors import InputError
from mel.skips import SkipReport


def test_skip_report_counts_and_examples():
    report = SkipReport(max_examples=2)
    report.skip("kb.jsonl:3", "not valid JSON", "unexpected end")
    report.skip("kb.jsonl:5", "not valid JSON")
    report.skip("kb.jsonl:9", "missing field 'qid'")
    report.filter("entity in language 'de' (not selected)", 4)
    assert report.total_skipped == 3
    assert report.skipped == {"not valid JSON": 2, "missing field 'qid'": 1}
    assert report.examples == ["kb.jsonl:3: not valid JSON (unexpected end)", "kb.jsonl:5: not valid JSON"]
    assert report.lines()[0] == "skipped 2 record(s): not valid JSON"
    assert "left out 4: entity in language 'de' (not selected)" in report.lines()
    assert report.to_json()["filtered"] == {"entity in language 'de' (not selected)": 4}
    assert report.why() == f" ({report.summary()})" and report.why().startswith(" (skipped 2 (not valid JSON)")
    assert SkipReport().why() == ""  # nothing skipped: an error says nothing more


def test_strict_skip_report_raises_at_the_first_problem():
    report = SkipReport(strict=True)
    report.filter("left out on purpose")  # never an error
    with pytest.raises(InputError, match=r"^kb\.jsonl:3: not valid JSON \(detail\)$"):
        report.skip("kb.jsonl:3", "not valid JSON", "detail")
