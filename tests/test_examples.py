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
