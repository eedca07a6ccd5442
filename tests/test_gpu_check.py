"""bench/gpu_check.sh keeps working without a GPU: its --dry-run runs every step on CPU at small sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")  # its `mel train` step


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--python", sys.executable,
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "MEL_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = out.read_text()
    result = json.loads(text)
    assert result["dry_run"] and result["failed"] == [] and result["date"]
    steps = result["steps"]
    fp16 = steps["fp16_vs_fp32_lealla"]
    assert fp16["passed"] and fp16["cosine_min"] >= 0.999
    assert steps["encoder_lealla"]["best_texts_per_s"] > 0
    assert set(steps["encoder_lealla"]["texts_per_s"]) == {"batch16_run", "batch16_io_binding", "batch64_run",
                                                           "batch64_io_binding"}
    link = steps["link_lealla"]
    assert link["runs"][link["best"]]["mentions"] == result["sizes"]["mentions"] and link["mentions_per_s"] > 0
    assert 0 < link["encode_share"] <= 1
    linker = steps["link_linker_lealla"]
    assert linker["method"] == "linker" and linker["mentions"] == result["sizes"]["linker_mentions"]
    assert linker["mentions_per_s"] > 0
    train = steps["train_lealla"]
    assert train["steps"] == result["sizes"]["train_steps"] and train["steps_per_s"] > 0
    assert str(tmp_path) not in text  # results are committed: no machine paths


def test_gpu_check_lists_what_is_missing(tmp_path):
    # Without --dry-run on a machine with no CUDA runtime, it says what is missing and exits 2.
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA runtime")
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--work", str(tmp_path / "w"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "onnxruntime with CUDA" in done.stderr
    assert json.loads(out.read_text())["missing"]


@pytest.mark.slow
def test_gpu_check_dry_run_from_a_bundle(tmp_path):
    """--bundle: the parts are checked and extracted, this checkout is installed beside them
    (without fetching anything) and the check runs on that installation, not on the source tree."""
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "bench" / "gpu_bundle.py")
    gpu_bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bundle)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "bundled_marker-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("bundled_marker.py", "")
        wheel.writestr("bundled_marker-1.0.dist-info/METADATA", "Name: bundled_marker\nVersion: 1.0\n")
    gpu_bundle.pack(tmp_path / "bundle", wheels, "3.12", part_mib=58)
    site, out = tmp_path / "site", tmp_path / "gpu.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--python", sys.executable,
                           "--bundle", str(tmp_path / "bundle"), "--site", str(site),
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "MEL_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (site / "bundled_marker.py").exists() and (site / "mel" / "cli" / "__init__.py").exists()
    assert json.loads(out.read_text())["failed"] == []


def test_steps_past_the_deadline_are_skipped_and_listed(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--python", sys.executable,
                           "--work", str(tmp_path / "work"), "--out", str(out), "--deadline-s", "0"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "MEL_HOME": str(tmp_path / "home")})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]  # a skipped check is not a pass
    result = json.loads(out.read_text())
    assert result["failed"] == [] and result["skipped"] == ["mel_info", "export_lealla"]
    assert result["steps"]["mel_info"] == {"skipped": "past the 0 s deadline"}
    assert result["command"] == "python bench/gpu_check.py --dry-run --deadline-s 0"  # without --work and --out
    assert not out.with_name("gpu.json.tmp").exists()
