"""Opening inputs and outputs: files or "-", compressed or not, read line by line.

Inputs are recognised by their first bytes (zstd, xz, gzip, bzip2), never by their
name alone, so `corpus.jsonl` that is really zstd, or a pipe from `zstdcat`,
both read correctly. Lines come back as bytes with their 1-based line number,
so a reader can report invalid UTF-8 on one line and go on.

Outputs are JSON Lines written under a temporary name and renamed into place
only when complete (compressed with zstd when the name ends in `.zst`); a
device, FIFO or /dev/stdout is written through instead (one rule for every
output: `mel.artifacts.output_target`). On stdout or a pipe, a reader that goes
away early (`| head`) ends the output quietly: `JsonlWriter.broken_pipe` tells
the caller.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import zstandard

from mel.artifacts import OutputFile, cannot_write
from mel.errors import InputError, RecordError

STDIO = "-"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd\x37\x7a\x58\x5a\x00"
GZIP_MAGIC = b"\x1f\x8b"
_SUFFIX_KINDS = {".zst": "zstd", ".zstd": "zstd", ".xz": "xz", ".gz": "gzip", ".bz2": "bzip2"}
# "BZh", a block size digit, then the first bytes of a block or of the end marker.
_BZIP2_NEXT = (b"1A", b"\x17r")
UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_COMPRESSED_CHUNK = 1 << 16  # small, as one chunk may expand a thousandfold
_ZSTD_PIECE = 1 << 12  # fed at a time, so the data before a corrupt block still comes out
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
# orjson reads JSON nested up to 1024 levels but writes at most 254: a record read back
# into an output must stay within that.
MAX_JSON_DEPTH = 254


def is_stdio(path: str | os.PathLike) -> bool:
    return str(path) == STDIO


def display_name(path: str | os.PathLike) -> str:
    """How a path appears in messages ("<stdin>" for "-")."""
    return "<stdin>" if is_stdio(path) else str(path)


def _starts_as_text(head: bytes) -> bool:
    """Whether `head` (a stream's first bytes) is UTF-8, a character cut at its end allowed."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def detect_compression(head: bytes) -> str | None:
    """"zstd", "xz", "gzip", "bzip2" or None (plain), from a stream's first 6 bytes."""
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:6] in _BZIP2_NEXT:
        return "bzip2"
    return None


class _PrefixedReader(io.RawIOBase):
    """A raw stream that first replays `prefix` (bytes already read to sniff
    the format), then continues with `source`; works for pipes that cannot seek."""

    def __init__(self, prefix: bytes, source: BinaryIO):
        self._prefix = prefix
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._source.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._source is not sys.stdin.buffer:
            self._source.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """Decompresses concatenated zstd frames and fails on a truncated last frame.

    (zstandard's own stream_reader ends quietly on truncated input, which would
    make a cut-off file look like a short, complete one.)
    """

    def __init__(self, source: BinaryIO):
        self._source = source
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._frame_has_input = False
        self._pending = memoryview(b"")
        self._offset = 0
        self._error: zstandard.ZstdError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._offset >= len(self._pending):
            if self._error is not None:
                raise self._error
            compressed = self._source.read(_COMPRESSED_CHUNK)
            if not compressed:
                if self._frame_has_input and not self._frame.eof:
                    raise EOFError("zstd data ends in the middle of a frame (truncated file?)")
                return 0
            self._pending = memoryview(self._feed(compressed))
            self._offset = 0
        n = min(len(view), len(self._pending) - self._offset)
        view[:n] = self._pending[self._offset : self._offset + n]
        self._offset += n
        return n

    def _feed(self, compressed: bytes) -> bytes:
        """Decompress what can be; corrupt data is raised only once the data before it is read,
        so that the error names the right line. Small pieces keep that data small."""
        out = []
        for start in range(0, len(compressed), _ZSTD_PIECE):
            piece = compressed[start : start + _ZSTD_PIECE]
            try:
                while piece:
                    if self._frame.eof:  # the next frame starts in this piece
                        self._frame = self._decompressor.decompressobj()
                    self._frame_has_input = True
                    out.append(self._frame.decompress(piece))
                    piece = self._frame.unused_data if self._frame.eof else b""
            except zstandard.ZstdError as exc:
                self._error = exc
                break
        return b"".join(out)

    def close(self) -> None:
        self._source.close()
        super().close()


class _Decoded(io.RawIOBase):
    """A decompressing stream that also closes the stream it reads from
    (LZMAFile and GzipFile leave a file object they were given open)."""

    def __init__(self, decoded: io.BufferedIOBase, source: BinaryIO):
        self._decoded = decoded
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._decoded.readinto(buffer)

    def close(self) -> None:
        try:
            self._decoded.close()
        finally:
            self._source.close()
            super().close()


def open_input(path: str | os.PathLike, source: BinaryIO | None = None) -> BinaryIO:
    """Open a file, or stdin for "-", as a decompressed binary stream.

    The compression is detected from the magic bytes; the caller closes the
    stream (closing stdin's wrapper leaves stdin itself open). `source` is an
    already open raw stream to decode instead (an object store's file, named `path`).
    """
    name = display_name(path)
    if source is None and is_stdio(path):
        source = sys.stdin.buffer
    elif source is None:
        try:
            source = open(path, "rb")
        except FileNotFoundError:
            raise InputError(f"{name}: file not found") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a folder, expected a file") from None
        except PermissionError:
            raise InputError(f"{name}: permission denied") from None
    head = b""
    while len(head) < len(XZ_MAGIC):
        more = source.read(len(XZ_MAGIC) - len(head))
        if not more:
            break
        head += more
    raw = io.BufferedReader(_PrefixedReader(head, source), buffer_size=_CHUNK)
    kind = detect_compression(head)
    named = _SUFFIX_KINDS.get(Path(str(path)).suffix.lower())
    if kind is None and named is not None and not _starts_as_text(head):
        # Plain text under a compressed name reads fine (content decides); anything else would
        # give one "invalid UTF-8" line after another: say what it is instead.
        raise InputError(f"{name}: named as {named} data, but it is neither {named} data nor text "
                         "(corrupt, or renamed)")
    if kind == "zstd":
        return io.BufferedReader(_ZstdReader(raw), buffer_size=_CHUNK)
    if kind == "xz":
        return io.BufferedReader(_Decoded(lzma.LZMAFile(raw, "rb"), raw), buffer_size=_CHUNK)
    if kind == "gzip":
        return io.BufferedReader(_Decoded(gzip.GzipFile(fileobj=raw, mode="rb"), raw), _CHUNK)
    if kind == "bzip2":
        return io.BufferedReader(_Decoded(bz2.BZ2File(raw, "rb"), raw), _CHUNK)
    return raw


def iter_lines(path: str | os.PathLike, source: BinaryIO | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line bytes without the line ending) for every line (of `source`, when given).

    A UTF-8 byte-order mark at the start is dropped. Corrupt or truncated
    compressed data raises InputError naming the file and the last good line.
    """
    name = display_name(path)
    line_no = 0
    with open_input(path, source) as stream:
        try:
            for line_no, line in enumerate(stream, start=1):
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                if line_no == 1 and line.startswith(UTF8_BOM):
                    line = line[len(UTF8_BOM) :]
                yield line_no, line
        except (EOFError, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile) as exc:
            # (bz2 reports corrupt, not truncated, data as a plain OSError; that
            # is left alone, as it could as well be a failing disk.)
            raise InputError(
                f"{name}: compressed data is truncated or corrupt after line {line_no} ({exc})"
            ) from None


class BadLine(ValueError):
    """A line that is not a JSON object: `reason` is a short category, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_json_object(line: bytes) -> dict:
    """Parse one JSON Lines line into a dict, or raise BadLine saying why not."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{line[exc.start]:02x} at offset {exc.start}"
        raise BadLine("invalid UTF-8", where) from None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # Each record is one line, so only the column is worth giving.
        raise BadLine("not valid JSON", f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise BadLine("not a JSON object", f"found {_json_kind(value)}")
    return value


def nested_deeper_than(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `value` (iteratively:
    the check itself never hits a recursion limit)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if not isinstance(item, (dict, list)):
            continue
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _compression_for_name(path: str | os.PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return {".zst": "zstd", ".xz": "xz", ".gz": "gzip"}.get(suffix)


class JsonlWriter:
    """Writes JSON Lines to a file, or to stdout ("-").

    Use as a context manager: on a clean exit the output is completed; on an
    exception it is dropped. A file follows `mel.artifacts.output_target`: a
    regular file (or a new name) is written under a temporary name and renamed
    over `path`, so `path` is untouched until the output is complete; a device,
    FIFO or /dev/stdout is written through. `compression` is "auto" (from the
    name: .zst, .xz, .gz), None, "zstd", "xz" or "gzip"; stdout is plain unless
    compression is given explicitly. A closed pipe (stdout or a FIFO) sets
    `broken_pipe` and later writes are dropped, without a traceback; the caller
    decides the exit code. Any other failure to write raises OutputError.
    """

    def __init__(
        self, path: str | os.PathLike, *, compression: str | None = "auto", level: int = 3
    ):
        self.path = path
        self.name = display_name(path)
        self.count = 0
        self.broken_pipe = False
        self._closed = False
        self._file: OutputFile | None = None
        if compression == "auto":
            compression = None if is_stdio(path) else _compression_for_name(path)
        if is_stdio(path):
            self._raw: BinaryIO = sys.stdout.buffer
        else:
            self._file = OutputFile(path, buffering=_CHUNK)
            self._raw = self._file.handle
        self._stream: BinaryIO = self._compressor(compression, level)

    def _compressor(self, compression: str | None, level: int) -> BinaryIO:
        if compression is None:
            return self._raw
        if compression == "zstd":
            return zstandard.ZstdCompressor(level=level).stream_writer(self._raw, closefd=False)
        if compression == "xz":
            return cast(BinaryIO, lzma.open(self._raw, "wb"))
        if compression == "gzip":
            return cast(BinaryIO, gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0))
        raise ValueError(f"unknown compression {compression!r}")

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, record: Mapping | bytes) -> bool:
        """Write one record (a dict, or an already-encoded line); False once
        the reader of a pipe has gone away."""
        if self.broken_pipe:
            return False
        if isinstance(record, (bytes, bytearray)):
            line = bytes(record).rstrip(b"\n") + b"\n"
        else:
            line = encode_line(record)
        try:
            self._stream.write(line)
        except BrokenPipeError:
            self._on_broken_pipe()
            return False
        except OSError as exc:
            raise cannot_write(self.name, exc) from None
        self.count += 1
        return True

    def close(self) -> None:
        """Finish the output: flush, and rename the temporary file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not self._raw:
                self._stream.close()  # writes the compressed stream's end
            if self._file is None:
                self._raw.flush()
            else:
                self._file.commit()
        except BrokenPipeError:
            self._on_broken_pipe()
            if self._file is not None:
                self._file.discard()
        except OSError as exc:
            self._discard()
            raise cannot_write(self.name, exc) from None
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Drop the output: remove the temporary file; stdout is just flushed."""
        if self._closed:
            return
        self._closed = True
        if self._file is None:
            try:
                self._raw.flush()
            except BrokenPipeError:
                self._on_broken_pipe()
            return
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.discard()

    def _on_broken_pipe(self) -> None:
        self.broken_pipe = True
        # Point the descriptor at /dev/null so the final flush does not print
        # "Exception ignored ... BrokenPipeError" (Python docs, "Note on SIGPIPE").
        try:
            fileno = self._raw.fileno()
        except (OSError, ValueError):
            return  # not a real file descriptor (a test's captured stdout)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fileno)
        finally:
            os.close(devnull)


def encode_line(record: Mapping) -> bytes:
    """One JSON Lines line; RecordError for a record JSON cannot hold as orjson writes it
    (nested deeper than `MAX_JSON_DEPTH`)."""
    try:
        return orjson.dumps(record, option=_DUMP_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise RecordError(f"cannot be written as JSON ({exc})") from None
