"""`mel link --engine ray` on a local Ray cluster (2 CPUs, no dashboard, no network): the merged output equals
plain `mel link` record for record, also when a worker is killed in the middle of the run."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.link_runs import read_run
from tests.mel.link_corpus import (
    LINKER_TOL,
    assert_same_records,
    build_label_index,
    corpus_lines,
    read_records,
    write_lines,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory, ray_local):
    folder = tmp_path_factory.mktemp("ray-link")
    index = build_label_index(tiny_model, folder)
    corpus = write_lines(folder / "corpus.jsonl", corpus_lines(2000))
    plain = folder / "plain.jsonl"
    result = CliRunner().invoke(main, ["link", str(corpus), "--index", str(index), "--precision", "fp32", "-o",
                                       str(plain), "-q"])
    assert result.exit_code == 3, result.output
    return {"index": index, "corpus": corpus, "plain": read_records(plain), "folder": folder}


def ray_link(setup, out, *extra):
    return CliRunner().invoke(main, ["link", str(setup["corpus"]), "--index", str(setup["index"]), "--precision",
                                     "fp32", "--engine", "ray", "-o", str(out), *map(str, extra)])


def test_ray_output_merged_equals_plain_link(setup, tmp_path):
    out = tmp_path / "run"
    result = ray_link(setup, out, "--workers", 2, "--task-docs", 300, "--compress")
    assert result.exit_code == 3, result.output  # as plain mel link: some records had errors
    errors = sum("error" in r for r in setup["plain"])
    assert "2,000 documents, " in result.output and f"{errors} errors" in result.output
    manifest = read_run(out)
    assert manifest.engine == "ray" and manifest.link["workers"] == 2
    assert manifest.counts["records"] == len(setup["plain"]) == manifest.inputs[0].records
    assert manifest.counts["errors"] == errors and len(manifest.parts) >= 2
    assert all(p.name.endswith(".jsonl.zst") for p in manifest.parts)
    assert sorted(p.name for p in manifest.parts) == sorted(f"parts/{f.name}" for f in (out / "parts").iterdir())
    merged = tmp_path / "merged.jsonl"
    assert CliRunner().invoke(main, ["link", "merge", str(out), "-o", str(merged)]).exit_code == 0
    assert_same_records(read_records(merged), setup["plain"], tol=LINKER_TOL)


def test_a_worker_killed_mid_run_leaves_complete_output_without_duplicates(setup, tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "run"
    outcome = {}

    def run():
        outcome["result"] = ray_link(setup, out, "--workers", 2, "--task-docs", 5)  # ~400 tasks: a long run

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 240
    first_seen = None
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        written = list(tmp_path.glob(".run.*.partial/parts/part-*"))
        workers = [p for p in psutil.process_iter(["cmdline"])
                   if any("MapWorker(MapBatches(LinkActor))" in part for part in p.info["cmdline"] or [])]
        first_seen = first_seen or (time.monotonic() if workers else None)
        # Kill a worker once the run has written parts, or a second after the workers appeared: the
        # whole run takes some 5 s here, its last 3 after the workers appear and its last 1 after
        # the first part (a wait of 5 s let a fast run end before the kill).
        if workers and (written or time.monotonic() - first_seen > 1):
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    result = outcome["result"]
    assert result.exit_code == 3, result.output
    manifest = read_run(out)
    assert manifest.counts["records"] == len(setup["plain"])
    merged = tmp_path / "merged.jsonl"
    assert CliRunner().invoke(main, ["link", "merge", str(out), "-o", str(merged)]).exit_code == 0
    got = read_records(merged)
    assert [r.get("id") for r in got] == [r.get("id") for r in setup["plain"]]  # nothing lost, nothing twice
    assert_same_records(got, setup["plain"], tol=LINKER_TOL)


def test_bad_index_is_one_error_line_before_ray_starts_work(setup, tmp_path):
    result = CliRunner().invoke(main, ["link", str(setup["corpus"]), "--index", str(tmp_path / "none"),
                                       "--engine", "ray", "-o", str(tmp_path / "run")])
    assert result.exit_code == 1 and "mel: error: " in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
