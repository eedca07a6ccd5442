"""On-disk artifacts: checksums, tool versions, provenance and atomic writes.

Every artifact mel writes (model folder, index folder, alias table, eval report)
carries a manifest made with these helpers, and is written under a temporary
name and renamed only when complete, so an interrupted run never leaves
something that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import orjson

from mel import __version__
from mel.errors import ArtifactError

# Distributions whose versions are recorded in manifests, when installed.
_RECORDED_TOOLS = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "scann",
    "tokenizers",
    "torch",
    "transformers",
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    versions = {"mel": __version__, "python": sys.version.split()[0]}
    for name in _RECORDED_TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def command_line() -> str:
    """The command that is running, as a user could paste it into a shell."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("mel", "__main__.py"):
        argv[0] = "mel"
    return shlex.join(argv)


def read_json(path: str | os.PathLike) -> dict:
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except orjson.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write JSON atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload + b"\n")


def current_umask() -> int:
    # mkstemp/mkdtemp create private (0600/0700) entries; finished artifacts get the usual modes.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; move it into place on success.

    With `force`, an existing `path` is replaced only once the new one is complete.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ArtifactError(f"{path} already exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def folder_size(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
