"""Model folders: the manifest, loading with checksum checks, and the model cache.

A model folder is self-describing (like a sentence-transformers folder):
`model.onnx` (fp32, the canonical graph), optional `model.int8.onnx` /
`model.fp16.onnx` variants made from it, `tokenizer.json` with the `[M]`
marker, and `mel-model.json`, the manifest.

Every field of the manifest is checked when the folder is opened (one line
naming the file and field otherwise), and every file mel runs is checked
against its sha256 in `files` when it is loaded. The model's identity, which an
index records and compares, ties those entries together: the sha256 of the
`sha256sum` listing of every exported file in name order (`identity`, written
at export). Editing one `files` entry, say to pass off another int8 graph, no
longer matches the identity; editing the identity too makes the model a
different one for every index built with it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from mel.artifacts import read_json, sha256_file
from mel.errors import ModelError

MODEL_FORMAT = "mel.model.v1"
MANIFEST_NAME = "mel-model.json"
PRECISIONS = ("fp32", "fp16", "int8")
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
DEFAULT_MODEL_NAME = "multilingual-e5-small"
TOKENIZER_FILE = "tokenizer.json"
POOLINGS = ("mean", "cls", "pooler")
GRAPH_INPUTS = ("input_ids", "attention_mask")
MIN_MAX_LENGTH = 8  # room for <s> [M] x [M] </s> and a little context
_SHA256 = re.compile(r"[0-9a-f]{64}")


def model_identity(files: dict[str, str]) -> str:
    """sha256 of the `sha256sum` listing of `files` (name -> sha256) in name order: what
    `sha256sum $(ls | grep -vx mel-model.json | LC_ALL=C sort) | sha256sum` prints in the folder."""
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


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
    # How each derived variant was made and how close it is to fp32 ({"int8": {...}}), and
    # the variant `--precision auto` runs per device ({"cpu": "int8", "cuda": "fp16"}),
    # both measured at export (exporters/variants.py). Older folders have neither.
    variants: dict = field(default_factory=dict)
    auto: dict = field(default_factory=dict)
    command: str = ""
    created: str = ""
    identity: str = ""  # model_identity(files), written at export; "" in folders of older mel

    def to_json(self) -> dict:
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        return data

    @classmethod
    def from_json(cls, data: dict, where: str = "manifest") -> ModelManifest:
        if not isinstance(data, dict):
            raise ModelError(f"{where}: not a model manifest (expected a JSON object)")
        if data.get("format") != MODEL_FORMAT:
            raise ModelError(f"{where}: format '{data.get('format')}' is not {MODEL_FORMAT}")
        missing = [k for k, f in cls.__dataclass_fields__.items()
                   if k not in data and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ModelError(f"{where}: field {missing[0]!r} is missing")
        _check_fields(data, where)
        return cls(**{**{k: data[k] for k in cls.__dataclass_fields__ if k in data},
                      "precisions": tuple(data["precisions"])})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(where: str, name: str, problem: str) -> ModelError:
    return ModelError(f"{where}: field {name!r} {problem}")


def _int_field(data: dict, where: str, name: str, low: int, high: int | None = None, prefix: str = "") -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise _field(where, prefix + name, f"is {value!r}, expected an integer {span}")
    return value


def _check_fields(data: dict[str, Any], where: str) -> None:
    """Types, ranges and consistency of every field (one error naming the first bad one)."""
    for name in ("source", "architecture", "marker", "attention", "mel_version", "command", "created"):
        if not isinstance(data.get(name, ""), str):
            raise _field(where, name, "is not a string")
    if not data["marker"]:
        raise _field(where, "marker", "is empty")
    config = data["config"]
    if not isinstance(config, dict):
        raise _field(where, "config", "is not an object")
    vocab = _int_field(config, where, "vocab_size", 1, prefix="config.")
    positions = _int_field(config, where, "max_position_embeddings", 1, prefix="config.")
    offset = config.get("position_offset", 0)
    if not _is_int(offset) or not 0 <= offset < positions:
        raise _field(where, "config.position_offset", f"is {offset!r}, expected an integer below the positions")
    if data["pooling"] not in POOLINGS:
        raise _field(where, "pooling", f"is {data['pooling']!r}, expected one of {', '.join(POOLINGS)}")
    dim = _int_field(data, where, "dim", 1)
    if _is_int(config.get("hidden_size")) and config["hidden_size"] != dim:
        raise _field(where, "dim", f"is {dim}, but config.hidden_size is {config['hidden_size']}")
    _int_field(data, where, "max_length", MIN_MAX_LENGTH, positions - offset)
    _int_field(data, where, "marker_id", 0, vocab - 1)
    special = data["special_ids"]
    if not isinstance(special, dict) or not {"start", "end", "pad"} <= set(special):
        raise _field(where, "special_ids", "needs start, end and pad")
    for role in ("start", "end", "pad"):
        if not _is_int(special[role]) or not 0 <= special[role] < vocab:
            raise _field(where, f"special_ids.{role}", f"is {special[role]!r}, expected a token id below {vocab}")
    prefixes = data["prefixes"]
    if not isinstance(prefixes, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in prefixes.items()):
        raise _field(where, "prefixes", "is not an object of strings")
    precisions = data["precisions"]
    if not isinstance(precisions, list) or "fp32" not in precisions or len(set(precisions)) != len(precisions) \
            or not set(precisions) <= set(PRECISIONS):
        raise _field(where, "precisions", f"is {precisions!r}, expected distinct ones of {', '.join(PRECISIONS)} "
                                          "with fp32")
    if not isinstance(data.get("tools", {}), dict):
        raise _field(where, "tools", "is not an object")
    variants = data.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(report, dict) for report in variants.values()):
        raise _field(where, "variants", "is not an object of objects")
    auto = data.get("auto", {})
    if not isinstance(auto, dict) or any(device not in ("cpu", "cuda") or choice not in precisions
                                         for device, choice in auto.items()):
        raise _field(where, "auto", f"is {auto!r}, expected cpu and cuda mapped to variants the folder has")
    _check_files(data, where)


def _check_files(data: dict[str, Any], where: str) -> None:
    files = data["files"]
    if not isinstance(files, dict):
        raise _field(where, "files", "is not an object")
    for name, digest in files.items():
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise _field(where, "files", f"names {name!r}, which is not a file of the folder")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _field(where, f"files.{name}", "is not a sha256 (64 hexadecimal digits)")
    needed = [TOKENIZER_FILE, *(VARIANT_FILES[p] for p in data["precisions"])]
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise _field(where, "files", f"lists no sha256 for {', '.join(unlisted)}")
    if data["checksum"] != files[VARIANT_FILES["fp32"]]:
        raise _field(where, "checksum", f"differs from files.{VARIANT_FILES['fp32']}")
    identity = data.get("identity", "")
    if identity and identity != model_identity(files):
        raise ModelError(f"{where}: field 'files' does not match field 'identity', the model identity recorded at "
                         "export (was a file replaced and its entry edited?); export the model again")


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

    @property
    def identity(self) -> str:
        """The model identity (see the module docstring): recorded at export, else computed
        from `files` (folders of older mel)."""
        return self.manifest.identity or model_identity(self.manifest.files)

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

    def tokenizer(self, verify: bool = True):
        """tokenizer.json, checked against its sha256 and against the manifest's marker."""
        from tokenizers import Tokenizer

        path = self.file(TOKENIZER_FILE, verify)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"{path}: not a readable tokenizer ({reason})") from None
        manifest = self.manifest
        found = tokenizer.token_to_id(manifest.marker)
        if found != manifest.marker_id:
            raise ModelError(f"{path}: the marker {manifest.marker!r} is token {found}, but {MANIFEST_NAME} field "
                             f"'marker_id' says {manifest.marker_id}")
        return tokenizer

    def check_graph(self, path: Path, inputs: Sequence, outputs: Sequence) -> None:
        """The graph takes what mel feeds and gives `dim`-wide vectors (onnxruntime's NodeArgs)."""
        names = sorted(node.name for node in inputs)
        if names != sorted(GRAPH_INPUTS):
            raise ModelError(f"{path}: graph inputs are {', '.join(names)}; mel feeds {', '.join(GRAPH_INPUTS)}")
        shape = list(outputs[0].shape) if outputs else []
        if len(shape) != 2 or (_is_int(shape[1]) and shape[1] != self.manifest.dim):
            raise ModelError(f"{path}: the graph gives vectors of shape {shape}, but {MANIFEST_NAME} field 'dim' "
                             f"says {self.manifest.dim}")


def mel_home() -> Path:
    """The cache for models (and later indexes): $MEL_HOME, default ~/.cache/mel."""
    return Path(os.environ.get("MEL_HOME") or Path.home() / ".cache" / "mel").expanduser()


def default_model_path() -> Path:
    return mel_home() / "models" / DEFAULT_MODEL_NAME
