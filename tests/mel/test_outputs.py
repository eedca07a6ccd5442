"""Output paths of `mel link` (and every writer): devices, FIFOs and symlinks are written through,
write failures are one error line, signals leave no output, deep records do not end a run.

Device nodes are private ones made in the test's folder (a null device, 1:3, and a full one, 1:7),
never the system's /dev entries. The runs use --method alias, which needs no model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mel import artifacts
from mel.artifacts import write_json
from mel.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
DOCS = DATA / "docs.jsonl"  # 4 documents
BAD_DOCS = DATA / "docs_bad.jsonl"  # 15 bad records


@pytest.fixture(scope="module")
def aliases(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aliases") / "table"
    result = CliRunner().invoke(main, ["alias", "build", "--links", str(DOCS), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def link(aliases: Path, source: Path, *args):
    return CliRunner().invoke(main, ["link", str(source), "--method", "alias", "--aliases", str(aliases), "-q",
                                     *[str(a) for a in args]])


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry of `folder`: its kind, device number, link target and content."""
    out = {}
    for path in sorted(folder.iterdir()):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        target = os.readlink(path) if path.is_symlink() else None
        out[path.name] = (stat.S_IFMT(info.st_mode), info.st_rdev, target, content)
    return out


def device(path: Path, minor: int) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return path


def test_a_device_given_as_output_is_written_through_not_replaced(aliases, tmp_path):
    null = device(tmp_path / "null", 3)
    before = snapshot(tmp_path)
    result = link(aliases, BAD_DOCS, "-o", null, "--errors", null)
    assert result.exit_code == 3, result.output  # bad records, written to the null device
    assert snapshot(tmp_path) == before  # still the same character device, nothing beside it


def test_a_fifo_given_as_output_is_written_through(aliases, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = link(aliases, DOCS, "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in received[0].splitlines()] == ["d1", "d2", "d3", 4]
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and sorted(os.listdir(tmp_path)) == ["fifo"]


def test_a_symlink_is_followed_its_target_replaced_and_the_link_kept(aliases, tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "linked.jsonl"
    target.write_text("old\n")
    (tmp_path / "out.jsonl").symlink_to("data/linked.jsonl")
    (tmp_path / "new.jsonl").symlink_to(tmp_path / "data" / "fresh.jsonl")  # dangling: made at its target
    assert link(aliases, DOCS, "-o", tmp_path / "out.jsonl", "--errors", tmp_path / "new.jsonl").exit_code == 0
    assert os.readlink(tmp_path / "out.jsonl") == "data/linked.jsonl"
    assert len(target.read_text().splitlines()) == 4
    assert (tmp_path / "new.jsonl").is_symlink() and (tmp_path / "data" / "fresh.jsonl").read_bytes() == b""
    assert sorted(os.listdir(tmp_path / "data")) == ["fresh.jsonl", "linked.jsonl"]  # no temporary file left


def test_a_full_disk_is_one_error_line(aliases, tmp_path):
    full = device(tmp_path / "full", 7)
    before = snapshot(tmp_path)
    result = link(aliases, DOCS, "-o", full)
    assert result.exit_code == 1
    assert result.output == f"mel: error: {full}: cannot write (no space left on device)\n"
    assert snapshot(tmp_path) == before


def test_a_failing_errors_file_leaves_the_existing_output_untouched(aliases, tmp_path):
    full = device(tmp_path / "full", 7)
    out = tmp_path / "out.jsonl"
    out.write_text("the previous run\n")
    before = snapshot(tmp_path)
    result = link(aliases, BAD_DOCS, "-o", out, "--errors", full)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"mel: error: {full}: cannot write (no space left on device)" in result.output
    assert snapshot(tmp_path) == before  # out.jsonl as it was, no temporary file


def test_an_output_whose_parent_is_a_file_is_one_error_line(aliases, tmp_path):
    (tmp_path / "afile").write_text("x")
    before = snapshot(tmp_path)
    result = link(aliases, DOCS, "-o", tmp_path / "afile" / "sub" / "out.jsonl")
    assert result.exit_code == 1
    assert result.output == (f"mel: error: {tmp_path}/afile/sub/out.jsonl: cannot write "
                             f"({tmp_path}/afile is a file, not a folder)\n")
    assert snapshot(tmp_path) == before


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write to: mode 0555, or for root (who ignores modes) immutable."""
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "out.jsonl").write_text("the previous run\n")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder is read-only to us")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_folder_is_one_error_line(aliases, read_only_folder):
    before = snapshot(read_only_folder)
    result = link(aliases, DOCS, "-o", read_only_folder / "out.jsonl")
    assert result.exit_code == 1
    assert result.output.startswith(f"mel: error: {read_only_folder}/out.jsonl: cannot write (")
    assert result.output.count("\n") == 1
    assert snapshot(read_only_folder) == before


def test_a_report_path_that_cannot_be_written_fails_before_the_evaluation(aliases, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["eval", "jsonl", str(DOCS), "--method", "alias", "--aliases", str(aliases),
                                       "--report", str(tmp_path / "afile" / "r.json")])
    assert result.exit_code == 1
    assert result.output == (f"mel: error: {tmp_path}/afile/r.json: cannot write "
                             f"({tmp_path}/afile is a file, not a folder)\n")  # no results printed first


def _child_signals(ignore: int | None) -> None:
    """The child's stop signals as a terminal would leave them (the tests may run under nohup,
    whose ignored SIGHUP the child would inherit and keep), then `ignore` ignored."""
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    if ignore is not None:
        signal.signal(ignore, signal.SIG_IGN)


def stopped_run(aliases: Path, out: Path, *signums: int, ignore: int | None = None) -> tuple[int, str]:
    """Start `mel link` on a stdin left open (so that it is mid-run), send `signums` once its
    temporary output exists; (exit code, stderr). `ignore`: a signal its parent ignores (nohup)."""
    process = subprocess.Popen([sys.executable, "-m", "mel", "link", "-", "--method", "alias", "--aliases",
                                str(aliases), "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: _child_signals(ignore))
    try:
        process.stdin.write(DOCS.read_bytes())
        process.stdin.flush()
        deadline = time.monotonic() + 120  # a bound on waiting for the start, not a timing assertion
        while not list(out.parent.glob(f".{out.name}.*.tmp")):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
            time.sleep(0.05)
        for signum in signums:
            process.send_signal(signum)
        stderr = process.stderr.read().decode()
        return process.wait(timeout=120), stderr
    finally:
        process.kill()
        process.stdin.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_removes_the_unfinished_output(aliases, tmp_path, signum):
    out = tmp_path / "out.jsonl"
    out.write_text("the previous run\n")
    code, stderr = stopped_run(aliases, out, signum)
    assert code == 128 + signum  # SIGTERM used to leave .out.jsonl.XXXX.tmp behind
    assert stderr == f"mel: error: stopped by {signal.Signals(signum).name}\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"] and out.read_text() == "the previous run\n"


def test_a_signal_ignored_by_the_parent_stays_ignored(aliases, tmp_path):
    """Under nohup, SIGHUP must not stop mel: it is ignored, and the SIGTERM after it stops the run."""
    code, stderr = stopped_run(aliases, tmp_path / "out.jsonl", signal.SIGHUP, signal.SIGTERM, ignore=signal.SIGHUP)
    assert (code, stderr) == (143, "mel: error: stopped by SIGTERM\n")
    assert os.listdir(tmp_path) == []


def test_write_json_syncs_the_data_before_the_rename(tmp_path, monkeypatch):
    events = []
    sync, replace = os.fsync, os.replace
    monkeypatch.setattr(artifacts.os, "fsync", lambda fd: (events.append("fsync"), sync(fd))[1])
    monkeypatch.setattr(artifacts.os, "replace", lambda a, b: (events.append("rename"), replace(a, b))[1])
    write_json(tmp_path / "report.json", {"a": 1})
    assert events[:2] == ["fsync", "rename"]  # then the folder entry is synced too
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": 1}


def test_a_record_nested_too_deep_to_write_is_passed_through_and_the_run_goes_on(aliases, tmp_path):
    deep = b'{"id": "deep", "text": "Paris", "mentions": [], "x": ' + b"[" * 300 + b"]" * 300 + b"}"
    good = DOCS.read_bytes().splitlines()[0]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([good, deep, good]) + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["link", str(source), "--method", "alias", "--aliases", str(aliases),
                                       "-o", str(out)])
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("id") for r in records] == ["d1", None, "d1"]
    assert records[1] == {"line": 2, "raw": deep.decode(),
                          "error": "nested deeper than 254 levels (mel cannot write it back)"}
    assert "2 documents, 4 mentions" in result.output and "1 errors" in result.output
    assert "error: line 2: nested deeper than 254 levels" in result.output


def test_output_folders_in_a_read_only_folder_are_one_error_line(aliases, read_only_folder, tiny_model):
    before = snapshot(read_only_folder)
    for command in (["alias", "build", "--links", str(DOCS), "-o", str(read_only_folder / "aliases")],
                    ["index", "build", "--kb", str(DATA / "kb.jsonl"), "--model", str(tiny_model), "--exact",
                     "-o", str(read_only_folder / "idx")]):
        result = CliRunner().invoke(main, [*command, "-q"])
        assert result.exit_code == 1
        assert result.output.startswith(f"mel: error: {read_only_folder}/"), result.output
        assert "cannot write (" in result.output and result.output.count("\n") == 1
    assert snapshot(read_only_folder) == before


def test_an_os_error_nobody_foresaw_is_one_line(tmp_path, monkeypatch):
    import importlib

    verify_module = importlib.import_module("mel.indexes.verify")  # (mel.indexes.verify is also a function)

    def failing(folder):
        raise OSError(5, "Input/output error", str(folder))
    monkeypatch.setattr(verify_module, "info", failing)
    result = CliRunner().invoke(main, ["index", "info", str(tmp_path)])
    assert (result.exit_code, result.output) == (1, f"mel: error: {tmp_path}: Input/output error\n")


def test_a_manifest_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "idx" / "manifest.json").mkdir(parents=True)
    result = CliRunner().invoke(main, ["index", "info", str(tmp_path / "idx")])
    assert result.exit_code == 1
    assert result.output == f"mel: error: {tmp_path}/idx/manifest.json: not readable (is a directory)\n"
