"""The command line starts without the heavy modules that only some commands need."""

from __future__ import annotations

import subprocess
import sys


def test_loading_every_command_does_not_import_onnx_or_torch():
    # onnx (with ml_dtypes) costs about a second to import and is needed only to export a model.
    code = ("import sys, mel.cli; heavy = [m for m in ('onnx', 'ml_dtypes', 'torch', 'ray') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
