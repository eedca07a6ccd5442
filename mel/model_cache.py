"""Which model a command runs: a model folder, or the offline default built on first use.

Building the default needs the exporters, so it lives here, above both the model
manifest reader (`mel.models`) and the exporters.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mel.models import DEFAULT_MODEL_NAME, MANIFEST_NAME, ModelFolder, default_model_path

DEFAULT_SPEC = "default"


def resolve_model(spec: str | os.PathLike | None, *, announce: Callable[[str], None] | None = None) -> ModelFolder:
    """A model folder path, or None/"default" for the offline default (built on first use)."""
    if spec is None or str(spec) == DEFAULT_SPEC:
        path = default_model_path()
        if not (path / MANIFEST_NAME).is_file():
            if announce:
                announce(f"building the default model ({DEFAULT_MODEL_NAME}) into {path} (first use only)")
            # Imported here: the exporters load onnx, about a second that no other use pays.
            from mel.exporters.default_model import build_default_model

            build_default_model(path)
        return ModelFolder.open(path)
    return ModelFolder.open(spec)
