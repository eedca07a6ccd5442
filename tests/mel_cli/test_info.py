"""`mel info`, and what every command says when the ONNX runtime is missing or doubled."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from mel import runtime
from mel.cli import main


def test_info_json_describes_the_installation(mel_home):
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mel"] and data["python"].split()[1] == ".".join(map(str, sys.version_info[:3]))
    assert data["onnxruntime"]["installed"] in ("cpu", "gpu")
    assert "CPUExecutionProvider" in data["onnxruntime"]["providers"]
    assert data["mel_home"].startswith(str(mel_home))
    assert set(data["default_model"]) >= {"path", "built"}


def test_info_table_names_each_piece(mel_home):
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    for row in ("onnxruntime", "providers", "CUDA devices", "ScaNN", "MEL_HOME", "default model"):
        assert row in result.stdout


def _no_runtime(monkeypatch):
    monkeypatch.setattr(runtime, "installed_runtimes", lambda: {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError


def test_a_command_without_a_runtime_names_both_extras(monkeypatch, tmp_path, default_model):
    _no_runtime(monkeypatch)
    result = CliRunner().invoke(main, ["model", "embed", str(default_model)], input="Paris\n")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mel: error: no ONNX runtime is installed: {runtime.INSTALL_HINT}"], result.output
    assert "mel[cpu]" in lines[0] and "mel[gpu]" in lines[0]


def test_info_without_a_runtime_says_what_to_install(monkeypatch):
    _no_runtime(monkeypatch)
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["onnxruntime"]["installed"] == "none"
    assert any("mel[cpu]" in line and "mel[gpu]" in line for line in data["advice"])


def test_both_runtimes_are_detected_and_explained(monkeypatch):
    monkeypatch.setattr(runtime, "installed_runtimes", lambda: {"onnxruntime": "1.0", "onnxruntime-gpu": "1.0"})
    assert runtime.runtime_kind() == "both"
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    assert f"mel: note: {runtime.BOTH_HINT}" in result.stderr


def test_a_broken_import_with_both_installed_explains_why(monkeypatch):
    monkeypatch.setattr(runtime, "installed_runtimes", lambda: {"onnxruntime": "1.0", "onnxruntime-gpu": "1.0"})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    try:
        runtime.load_onnxruntime()
    except runtime.RuntimeMissing as exc:
        assert runtime.BOTH_HINT in str(exc)
    else:
        raise AssertionError("expected RuntimeMissing")
