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
import stat
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

import orjson

from mel import __version__
from mel.errors import ArtifactError, InputError, OutputError

# Distributions whose versions are recorded in manifests, when installed.
_RECORDED_TOOLS = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "scann",
    "scikit-learn",  # fits the linker's reranker (mel index tune)
    "scipy",
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
    except OSError as exc:  # a folder, no permission
        reason = exc.strerror or type(exc).__name__
        raise ArtifactError(f"{path}: not readable ({reason[:1].lower()}{reason[1:]})") from None


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write JSON as any output: complete or not at all, synced to disk (see `OutputFile`)."""
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    with OutputFile(path) as handle:
        handle.write(payload + b"\n")


def current_umask() -> int:
    # mkstemp/mkdtemp create private (0600/0700) entries; finished artifacts get the usual modes.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MAX_LINKS = 40  # as the kernel's own limit on a chain of symbolic links


def follow_links(path: str | os.PathLike) -> Path:
    """Where a chain of symbolic links ends (`path` itself when it is not a link)."""
    current = Path(os.path.abspath(path))
    for _ in range(_MAX_LINKS):
        current = Path(os.path.realpath(current.parent)) / current.name
        if not current.is_symlink() or _under_proc(current):
            return current
        current = current.parent / os.readlink(current)
    raise OutputError(f"{path}: too many levels of symbolic links")


def _under_proc(path: Path) -> bool:
    # /dev/stdout, /dev/fd/N lead to /proc/self/fd/N, whose "links" name open files, pipes and
    # sockets: such a path is opened, never resolved and replaced.
    return path.parts[:2] == ("/", "proc")


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """(where the output lands, whether it is replaced by renaming a temporary file over it).

    The one rule for every output path: a regular file, or a name that does not exist
    yet, is written under a temporary name next to it and renamed when complete; a
    symbolic link is followed, so its target is replaced and the link kept. Anything
    else (a device such as /dev/null, a FIFO, a socket, /dev/stdout) is opened and
    written through, never replaced. A folder is refused.
    """
    target = follow_links(path)
    if _under_proc(target):
        return Path(path), False
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new name (its parent is checked on opening)
        return target, True
    except OSError as exc:
        raise cannot_write(path, exc) from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a folder, expected an output file name")
    return (target, True) if stat.S_ISREG(mode) else (Path(path), False)


def cannot_write(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The one-line error for an output that fails (no traceback, the path and the reason)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"{path}: cannot write ({reason[:1].lower()}{reason[1:]})")


def _make_parent(path: str | os.PathLike, target: Path) -> None:
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{path}: cannot write ({ancestor} is a file, not a folder)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from None


def _temporary_next_to(path: str | os.PathLike, target: Path) -> tuple[int, Path]:
    _make_parent(path, target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; act like open()
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


def check_writable(path: str | os.PathLike) -> None:
    """Fail now rather than after a long run when `path` cannot be written (its folder is
    made, and a temporary file made and removed in it)."""
    target, atomic = output_target(path)
    if atomic:
        fd, tmp = _temporary_next_to(path, target)
        os.close(fd)
        tmp.unlink()


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the data itself is synced
    finally:
        os.close(fd)


class OutputFile:
    """A binary output that appears only when complete, by the rule of `output_target`.

    Use as a context manager (`with OutputFile(path) as handle:`), or call `commit`
    (flush, fsync, rename into place) or `discard` (remove the temporary file). An
    OSError on the way (read-only folder, full disk) becomes an OutputError naming
    the path; `path` is then left as it was.
    """

    def __init__(self, path: str | os.PathLike, *, buffering: int = -1):
        self.path = path
        self.target, atomic = output_target(path)
        self.tmp: Path | None = None
        self.handle: BinaryIO
        if atomic:
            fd, self.tmp = _temporary_next_to(path, self.target)
            self.handle = os.fdopen(fd, "wb", buffering=buffering)
        else:
            try:
                # Append: a /dev/stdout-style path may be a file the shell opened for appending.
                self.handle = open(path, "ab", buffering=buffering)
            except OSError as exc:
                raise cannot_write(path, exc) from None

    @property
    def replaces(self) -> bool:
        """Whether the output is renamed into place (False: written through)."""
        return self.tmp is not None

    def __enter__(self) -> BinaryIO:
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise cannot_write(self.path, exc) from None

    def commit(self) -> None:
        try:
            self.handle.flush()
            if self.tmp is not None:
                os.fsync(self.handle.fileno())
            self.handle.close()
            if self.tmp is not None:
                os.replace(self.tmp, self.target)
                self.tmp = None
                _sync_folder(self.target.parent)
        except BrokenPipeError:
            self.discard()
            raise
        except OSError as exc:
            self.discard()
            raise cannot_write(self.path, exc) from None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        try:
            self.handle.close()
        except OSError:
            pass  # what could not be flushed is dropped with the rest
        finally:
            if self.tmp is not None:
                self.tmp.unlink(missing_ok=True)
                self.tmp = None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a path to write `path`'s new content to, by the rule of `output_target`:
    a temporary file renamed over `path` on success (after an fsync), or for a device
    or FIFO the path itself."""
    target, atomic = output_target(path)
    if not atomic:
        yield Path(path)
        return
    fd, tmp = _temporary_next_to(path, target)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _sync_folder(target.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def replace_folder(new: Path, path: Path) -> None:
    """Move the finished folder `new` to `path`; an existing `path` is set aside as `.NAME.old`
    first and removed only once `new` is in place."""
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; move it into place on success.

    With `force`, an existing `path` is replaced only once the new one is complete.
    A symbolic link is followed: the folder it leads to is replaced, the link kept.
    """
    given = path
    path = follow_links(path)
    if path.exists() and not force:
        raise ArtifactError(f"{given} already exists (use --force to replace it)")
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{given} is not a folder; refusing to replace it with one")
    _make_parent(given, path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise cannot_write(given, exc) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def folder_size(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# Source fingerprints: what a resumed build compares to refuse sources that changed.
_WHOLE_HASH_BYTES = 64 << 20  # files up to this size are hashed whole
_SAMPLED_BLOCKS = 64  # bigger ones: this many blocks, evenly spread, first and last included
_BLOCK_BYTES = 1 << 20


def _file_fingerprint(path: Path) -> dict:
    info = path.stat()
    digest = hashlib.sha256()
    whole = info.st_size <= _WHOLE_HASH_BYTES
    with open(path, "rb") as handle:
        if whole:
            while block := handle.read(_BLOCK_BYTES):
                digest.update(block)
        else:
            last = info.st_size - _BLOCK_BYTES
            for number in range(_SAMPLED_BLOCKS):
                handle.seek(last * number // (_SAMPLED_BLOCKS - 1))
                digest.update(handle.read(_BLOCK_BYTES))
    return {"bytes": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": digest.hexdigest(),
            "hashed": "whole" if whole else f"{_SAMPLED_BLOCKS} sampled blocks of {_BLOCK_BYTES} bytes"}


def fingerprint(path: str | os.PathLike) -> dict:
    """Size, modification time and content hash of a source file, or of every file under a
    source folder ("-", stdin, has none). Files up to 64 MiB are hashed whole, bigger ones by
    64 sampled blocks of 1 MiB (then the size and time must match too)."""
    if str(path) == "-":
        return {"stdin": True}
    path = Path(path)
    if path.is_dir():
        return {"files": {p.relative_to(path).as_posix(): _file_fingerprint(p)
                          for p in sorted(path.rglob("*")) if p.is_file()}}
    return _file_fingerprint(path)


def fingerprint_change(name: str, old: dict | None, new: dict) -> str | None:
    """How source `name` changed between two fingerprints (None: it did not)."""
    if old is None:
        return f"{name} was not a source of the unfinished build"
    if old.get("stdin") or new.get("stdin"):
        return f"{name} is stdin, which cannot be compared with what the unfinished build read"
    if "files" in old or "files" in new:
        before, after = old.get("files", {}), new.get("files", {})
        for file in sorted(set(before) | set(after)):
            if file not in before or file not in after:
                return f"{name}/{file} was {'added' if file in after else 'removed'}"
            change = fingerprint_change(f"{name}/{file}", before[file], after[file])
            if change:
                return change
        return None
    keys = ("bytes", "sha256") if old.get("hashed") == new.get("hashed") == "whole" else ("bytes", "mtime_ns", "sha256")
    for key in keys:
        if old.get(key) != new.get(key):
            what = {"bytes": "size", "mtime_ns": "modification time", "sha256": "content"}[key]
            return f"{name} changed since the unfinished build (its {what} differs)"
    return None
