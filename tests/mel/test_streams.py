import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import textwrap

import orjson
import pytest
import zstandard

from mel.errors import InputError
from mel.streams import (
    BadLine,
    JsonlWriter,
    detect_compression,
    iter_lines,
    open_input,
    parse_json_object,
)

RECORDS = [{"id": i, "text": f"línea {i} 🙂", "mentions": [{"start": 0, "end": 5}]} for i in range(50)]


def _read_records(path):
    return [orjson.loads(line) for _, line in iter_lines(path)]


def test_magic_bytes_are_recognised():
    assert detect_compression(zstandard.ZstdCompressor().compress(b"x")) == "zstd"
    assert detect_compression(lzma.compress(b"x")) == "xz"
    assert detect_compression(gzip.compress(b"x")) == "gzip"
    assert detect_compression(bz2.compress(b"x")) == "bzip2"
    assert detect_compression(bz2.compress(b"")) == "bzip2"
    assert detect_compression(b"BZh is how this text starts") is None
    assert detect_compression(b'{"qid": "Q1"}') is None
    assert detect_compression(b"") is None


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst", "out.jsonl.xz", "out.jsonl.gz"])
def test_writer_round_trip(tmp_path, name):
    path = tmp_path / name
    with JsonlWriter(path) as writer:
        for record in RECORDS:
            writer.write(record)
    assert writer.count == len(RECORDS)
    expected = {".zst": "zstd", ".xz": "xz", ".gz": "gzip"}.get(path.suffix)
    assert detect_compression(path.read_bytes()[:6]) == expected
    assert _read_records(path) == RECORDS


def test_compression_is_detected_by_content_not_name(tmp_path):
    payload = b"".join(orjson.dumps(r) + b"\n" for r in RECORDS)
    zstd_named_plain = tmp_path / "really-zstd.jsonl"
    zstd_named_plain.write_bytes(zstandard.ZstdCompressor().compress(payload))
    plain_named_zst = tmp_path / "really-plain.jsonl.zst"
    plain_named_zst.write_bytes(payload)
    xz_named_gz = tmp_path / "really-xz.gz"
    xz_named_gz.write_bytes(lzma.compress(payload))
    bzip2_named_xz = tmp_path / "really-bzip2.xz"
    bzip2_named_xz.write_bytes(bz2.compress(payload))
    for path in (zstd_named_plain, plain_named_zst, xz_named_gz, bzip2_named_xz):
        assert _read_records(path) == RECORDS


def test_concatenated_zstd_frames_are_all_read(tmp_path):
    path = tmp_path / "frames.zst"
    compressor = zstandard.ZstdCompressor()
    path.write_bytes(compressor.compress(b"a\nb\n") + compressor.compress(b"c\n"))
    assert [line for _, line in iter_lines(path)] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    "compress", [zstandard.ZstdCompressor().compress, lzma.compress, gzip.compress, bz2.compress]
)
def test_truncated_compressed_input_is_an_error(tmp_path, compress):
    payload = b"".join(orjson.dumps({"i": i, "pad": "x" * (i % 97)}) + b"\n" for i in range(20000))
    data = compress(payload)
    path = tmp_path / "cut.jsonl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jsonl: compressed data is truncated or corrupt after line \d+"):
        for _ in iter_lines(path):
            pass


def test_corrupt_zstd_names_the_last_good_line(tmp_path):
    """The lines before the corruption are read, and the message gives their count, not "line 0"."""
    good = zstandard.ZstdCompressor().compress(b"".join(b'{"i": %d}\n' % i for i in range(500)))
    path = tmp_path / "corrupt.jsonl.zst"
    path.write_bytes(good + b"\x28\xb5\x2f\xfd" + bytes(range(200)))  # a second frame of garbage
    read = []
    with pytest.raises(InputError, match=r"corrupt\.jsonl\.zst: compressed data is truncated or corrupt "
                                         r"after line 500 \("):
        for number, _ in iter_lines(path):
            read.append(number)
    assert read == list(range(1, 501))


def test_lines_are_numbered_and_endings_removed(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\xef\xbb\xbf{\"a\": 1}\r\n\n{\"b\": 2}\nbad \xff byte\nlast without newline")
    assert list(iter_lines(path)) == [
        (1, b'{"a": 1}'),
        (2, b""),
        (3, b'{"b": 2}'),
        (4, b"bad \xff byte"),
        (5, b"last without newline"),
    ]


def test_stdin_is_read_and_sniffed(monkeypatch):
    payload = b"".join(orjson.dumps(r) + b"\n" for r in RECORDS)
    fake_stdin = io.TextIOWrapper(io.BytesIO(zstandard.ZstdCompressor().compress(payload)))
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    assert _read_records("-") == RECORDS
    assert not fake_stdin.buffer.closed  # stdin itself is left open


def test_stdin_pipe_in_small_pieces(tmp_path):
    """A pipe that delivers fewer bytes than the magic number at first still works."""
    script = textwrap.dedent(
        """
        import sys
        from mel.streams import iter_lines
        print(sum(1 for _ in iter_lines("-")))
        """
    )
    payload = lzma.compress(b"".join(orjson.dumps(r) + b"\n" for r in RECORDS))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    child.stdin.write(payload[:2])
    child.stdin.flush()
    child.stdin.write(payload[2:])
    child.stdin.close()
    out = child.stdout.read()
    assert child.wait(timeout=60) == 0, child.stderr.read()
    assert out.strip() == str(len(RECORDS)).encode()


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="nothing.jsonl: file not found"):
        open_input(tmp_path / "nothing.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        open_input(tmp_path)


def test_parse_json_object_reasons():
    assert parse_json_object(b'{"qid": "Q1"}') == {"qid": "Q1"}
    cases = {
        b'{"qid": ': "not valid JSON",
        b"[1, 2]": "not a JSON object",
        b'"text"': "not a JSON object",
        b'{"t": "caf\xe9"}': "invalid UTF-8",
    }
    for line, reason in cases.items():
        with pytest.raises(BadLine) as info:
            parse_json_object(line)
        assert info.value.reason == reason
    with pytest.raises(BadLine) as info:
        parse_json_object(b'{"t": "caf\xe9"}')
    assert info.value.detail == "byte 0xe9 at offset 10"


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl.zst"
    with JsonlWriter(path) as writer:
        writer.write({"a": 1})
        assert not path.exists()  # only a temporary name while writing
        temporary = list(tmp_path.iterdir())
        assert len(temporary) == 1 and temporary[0].name.startswith(".out.jsonl.zst.")
    assert _read_records(path) == [{"a": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl.zst"]


def test_writer_failure_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with JsonlWriter(path) as writer:
            writer.write({"a": 1})
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    path.write_text('{"old": true}\n')
    with pytest.raises(KeyboardInterrupt):
        with JsonlWriter(path) as writer:
            writer.write({"new": True})
            raise KeyboardInterrupt
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_writer_creates_files_with_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with JsonlWriter(tmp_path / "sub" / "out.jsonl") as writer:
            writer.write({"a": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "sub" / "out.jsonl").stat().st_mode & 0o777 == 0o644


def test_writer_accepts_encoded_lines_and_numpy_scalars(tmp_path):
    import numpy as np

    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(b'{"raw": 1}')
        writer.write({"score": np.float32(0.5), "n": np.int64(3)})
    assert _read_records(path) == [{"raw": 1}, {"score": 0.5, "n": 3}]


def test_writer_to_stdout_with_explicit_zstd(tmp_path):
    script = textwrap.dedent(
        """
        from mel.streams import JsonlWriter
        with JsonlWriter("-", compression="zstd") as writer:
            for i in range(3):
                writer.write({"i": i})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(done.stdout).splitlines()
    assert [orjson.loads(line) for line in lines] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_broken_pipe_on_stdout_is_quiet_and_detectable():
    script = textwrap.dedent(
        """
        import sys
        from mel.streams import JsonlWriter
        with JsonlWriter("-") as writer:
            for i in range(200000):
                if not writer.write({"i": i, "pad": "x" * 100}):
                    break
        sys.exit(3 if writer.broken_pipe else 0)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = child.stdout.readline()
    child.stdout.close()  # the reader goes away, like `| head -1`
    code = child.wait(timeout=60)
    stderr = child.stderr.read()
    assert orjson.loads(first) == {"i": 0, "pad": "x" * 100}
    assert code == 3
    assert stderr == b""


def test_a_compressed_name_over_data_that_is_neither_says_so(tmp_path):
    from mel.streams import iter_lines

    broken = tmp_path / "corpus.jsonl.zst"
    broken.write_bytes(b"\x8f\xda\x16\xd5Q%" + bytes(range(128, 256)))  # neither zstd nor text
    with pytest.raises(InputError, match=r"corpus\.jsonl\.zst: named as zstd data, but it is neither zstd data nor "
                                         r"text \(corrupt, or renamed\)"):
        list(iter_lines(broken))
    cut = tmp_path / "cut.gz"
    cut.write_bytes("{\"é\": 1}\n".encode()[:3])  # text whose first character is cut after its first byte
    assert [line for _, line in iter_lines(cut)] == [b'{"\xc3']  # reads as text; the line reports its own error
    (tmp_path / "empty.xz").write_bytes(b"")
    assert list(iter_lines(tmp_path / "empty.xz")) == []
