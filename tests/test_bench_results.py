"""The committed bench results (bench/results/*.json): each is valid JSON and
holds no path of the machine it ran on (a result is read on other machines); every bench that
writes one records the command that made it (results written before they did lack it), and
the linker benches also the tool versions and model they ran with."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

RESULTS = sorted((Path(__file__).resolve().parents[1] / "bench" / "results").glob("*.json"))
# An absolute path: "/tmp/x", "/home/me/...", "C:\\Users\\..." at the start of a word.
MACHINE_PATH = re.compile(r"(?:^|[\s=\"'(])(?:/(?:tmp|home|root|work|Users|var|mnt|opt|scratch)/|[A-Za-z]:\\)")


def strings(value, where=""):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key, f"{where}/{key} (key)")
            yield from strings(item, f"{where}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}/{i}")


def test_the_pattern_finds_machine_paths_and_leaves_relative_ones():
    assert MACHINE_PATH.search("bench/bench_verify.py --out /tmp/wt13-w1.json")
    assert MACHINE_PATH.search("--work=/home/me/runs")
    assert MACHINE_PATH.search("C:\\Users\\me")
    assert not MACHINE_PATH.search("bench/bench_quantization.py --out bench/results/quantization.json")
    assert not MACHINE_PATH.search("mel eval mewsli9 $WORK/mewsli-10000 --index $WORK/index-2000")


def test_there_are_results():
    assert len(RESULTS) >= 10


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_a_result_is_json_with_no_machine_path(path):
    result = orjson.loads(path.read_bytes())
    found = [(where, text) for where, text in strings(result) if MACHINE_PATH.search(text)]
    assert not found, f"{path.name}: machine paths {found[:3]}"


def test_every_bench_that_writes_a_result_records_its_command():
    bench = RESULTS[0].parents[1]
    writers = [path for path in sorted(bench.glob("*.py")) if "bench/results/" in path.read_text()]
    assert len(writers) >= 10
    silent = [path.name for path in writers if not re.search(r"[\"']command[\"']|command_line\(\)", path.read_text())]
    assert not silent, f"benches writing results without their command: {silent}"


@pytest.mark.parametrize("name", ["linker.json", "own_links.json", "document_evidence.json"])
def test_the_linker_results_record_the_tools_and_the_model_they_ran_with(name):
    # Their figures move with onnxruntime (which quantises the default model) and scikit-learn.
    result = orjson.loads((RESULTS[0].parent / name).read_bytes())
    assert {"onnxruntime", "scikit-learn", "numpy"} <= set(result["tool_versions"])
    assert set(result["model"]["files"]) >= {"model.onnx", "model.int8.onnx"} and result["model"]["identity"]
