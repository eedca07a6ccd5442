"""The quickstart's sample data in examples/ passes its own checks (examples/check_samples.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_sample_data_passes_check_samples():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "check_samples.py")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("all checks passed")
    assert "kb.jsonl: 401 entities, 3609 lines" in done.stdout


def test_the_shipped_calibration_texts_are_what_make_calibration_writes():
    import hashlib

    from mel.exporters.quantize import CALIBRATION_SHA256

    done = subprocess.run([sys.executable, str(ROOT / "examples" / "make_calibration.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = (ROOT / "exporters" / "data" / "calibration.jsonl").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == CALIBRATION_SHA256
