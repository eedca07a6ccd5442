"""The quickstart's steps (README "Quickstart details") in a temporary $MEL_HOME: outputs exist,
and the recall is the one the README states."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mel.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_steps(default_model, tmp_path):
    run = CliRunner().invoke
    index = tmp_path / "index-labels"
    result = run(main, ["index", "build", "--kb", str(ROOT / "examples/kb.jsonl"), "--kinds", "label",
                        "-o", str(index), "-q"])
    assert result.exit_code == 0, result.output

    linked = tmp_path / "linked.jsonl"
    result = run(main, ["link", str(ROOT / "examples/corpus.jsonl"), "--index", str(index), "-o", str(linked)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in linked.read_text().splitlines()]
    assert len(records) == 30 and all(m["qid"] for r in records for m in r["mentions"])

    report = tmp_path / "eval-report.json"
    result = run(main, ["eval", "mewsli9", str(ROOT / "examples/mewsli9-sample"), "--index", str(index),
                        "--method", "labels", "--report", str(report), "-q"])
    assert result.exit_code == 0, result.output
    micro = json.loads(report.read_text())["results"]["micro"]
    stated = re.search(r"R@1 = ([0-9.]+), R@10 = ([0-9.]+)", (ROOT / "README.md").read_text())
    assert stated, "README must state the quickstart's recall"
    assert micro["mentions"] == 318
    assert micro["R@1"] == pytest.approx(float(stated.group(1)), abs=0.005)
    assert micro["R@10"] == pytest.approx(float(stated.group(2)), abs=0.005)
    assert micro["R@1"] >= 0.80  # the target
