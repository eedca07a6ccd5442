"""The quickstart's steps (README "Quickstart details") in a temporary $MEL_HOME: outputs exist,
the recall is the one the README states, and the fused linker never ranks worse than its
string view alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mel.cli import main

ROOT = Path(__file__).resolve().parents[1]


def micro(report: Path) -> dict:
    return json.loads(report.read_text())["results"]["micro"]


@pytest.mark.slow
def test_quickstart_steps(default_model, tmp_path):
    run = CliRunner().invoke
    index = tmp_path / "index"
    result = run(main, ["index", "build", "--kb", str(ROOT / "examples/kb.jsonl"), "-o", str(index), "-q"])
    assert result.exit_code == 0, result.output

    linked = tmp_path / "linked.jsonl"
    result = run(main, ["link", str(ROOT / "examples/corpus.jsonl"), "--index", str(index), "-o", str(linked)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in linked.read_text().splitlines()]
    assert len(records) == 30 and all(m["qid"] for r in records for m in r["mentions"])

    reports = {}
    for method in ("linker", "labels"):
        reports[method] = tmp_path / f"eval-{method}.json"
        result = run(main, ["eval", "mewsli9", str(ROOT / "examples/mewsli9-sample"), "--index", str(index),
                            "--method", method, "--report", str(reports[method]), "-q"])
        assert result.exit_code == 0, result.output
    linker, labels = micro(reports["linker"]), micro(reports["labels"])
    stated = re.search(r"R@1 = ([0-9.]+), R@10 = ([0-9.]+)", (ROOT / "README.md").read_text())
    assert stated, "README must state the quickstart's recall"
    assert linker["mentions"] == 318
    assert linker["R@1"] == pytest.approx(float(stated.group(1)), abs=0.005)
    assert linker["R@10"] == pytest.approx(float(stated.group(2)), abs=0.005)
    assert linker["R@1"] >= labels["R@1"]  # the untuned linker is never worse than its string view
    assert json.loads(reports["linker"].read_text())["calibration"]["ece"] <= 0.2
    # The shipped reranker was fitted on the sample, and the report says so.
    report = json.loads(reports["linker"].read_text())
    checked = report["in_reranker_gold"]["trees"]
    assert checked["checked"] > 100 and checked["found"] == checked["checked"]
    assert any("these figures are in-sample" in note for note in report["notes"])
    assert json.loads(reports["labels"].read_text())["in_reranker_gold"] is None
