"""Model folders: the manifest, loading with checksum checks, and the model cache.

A model folder is self-describing (like a sentence-transformers folder):
`model.onnx` (fp32, the canonical graph whose sha256 identifies the model),
optional `model.int8.onnx` / `model.fp16.onnx` variants, `tokenizer.json` with
the `[M]` marker, and `mel-model.json`, the manifest.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mel.artifacts import read_json, sha256_file
from mel.errors import ModelError

MODEL_FORMAT = "mel.model.v1"
MANIFEST_NAME = "mel-model.json"
PRECISIONS = ("fp32", "fp16", "int8")
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
DEFAULT_MODEL_NAME = "multilingual-e5-small"


@dataclass(frozen=True)
class ModelManifest:
    format: str
    source: str
    architecture: str
    config: dict
    pooling: str
    dim: int
    max_length: int
    marker: str
    marker_id: int
    special_ids: dict
    prefixes: dict
    precisions: tuple[str, ...]
    attention: str
    checksum: str
    files: dict
    mel_version: str
    tools: dict = field(default_factory=dict)
    command: str = ""
    created: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        return data

    @classmethod
    def from_json(cls, data: dict, where: str = "manifest") -> ModelManifest:
        if data.get("format") != MODEL_FORMAT:
            raise ModelError(f"{where}: format '{data.get('format')}' is not {MODEL_FORMAT}")
        try:
            return cls(**{**{k: data[k] for k in cls.__dataclass_fields__ if k in data},
                          "precisions": tuple(data["precisions"])})
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{where}: malformed manifest (field {exc})") from None


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    manifest: ModelManifest

    @classmethod
    def open(cls, path: str | os.PathLike) -> ModelFolder:
        path = Path(path)
        if not path.is_dir():
            raise ModelError(f"{path}: no such model folder")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ModelError(f"{path}: not a mel model folder (no {MANIFEST_NAME}); "
                             "make one with `mel model export` or `mel model default`")
        try:
            data = read_json(manifest_path)
        except Exception as exc:  # ArtifactError carries the reason
            raise ModelError(str(exc)) from None
        return cls(path=path, manifest=ModelManifest.from_json(data, str(manifest_path)))

    def file(self, name: str, verify: bool = True) -> Path:
        """Path of a listed file, after checking it against the manifest's sha256."""
        expected = self.manifest.files.get(name)
        path = self.path / name
        if expected is None:
            raise ModelError(f"{path}: not listed in {MANIFEST_NAME}")
        if not path.is_file():
            raise ModelError(f"{path}: missing (the model folder is incomplete; export it again)")
        if verify:
            actual = sha256_file(path)
            if actual != expected:
                raise ModelError(f"{path}: checksum mismatch (sha256 {actual[:12]}…, manifest says "
                                 f"{expected[:12]}…); the file is altered or truncated: export the model again")
        return path

    def variant(self, precision: str, verify: bool = True) -> Path:
        if precision not in self.manifest.precisions:
            raise ModelError(f"{self.path}: has no {precision} variant (has {', '.join(self.manifest.precisions)}); "
                             f"export it with --precision {precision}")
        path = self.file(VARIANT_FILES[precision], verify)
        external = path.with_name(path.name + ".data")
        if external.name in self.manifest.files:
            self.file(external.name, verify)
        return path


def mel_home() -> Path:
    """The cache for models (and later indexes): $MEL_HOME, default ~/.cache/mel."""
    return Path(os.environ.get("MEL_HOME") or Path.home() / ".cache" / "mel").expanduser()


def default_model_path() -> Path:
    return mel_home() / "models" / DEFAULT_MODEL_NAME
