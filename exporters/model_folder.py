"""Write a mel model folder: ONNX graph(s), tokenizer with `[M]`, and manifest.

One builder serves every source: Hugging Face checkpoints (`mel model export`),
the offline default (`mel model default`) and fine-tuned weights (`mel train`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from tokenizers import AddedToken, Tokenizer

from mel import __version__
from mel.artifacts import atomic_folder, command_line, sha256_file, tool_versions, write_json
from mel.errors import ModelError
from mel.exporters.bert_onnx import build_bert_graph
from mel.exporters.checkpoints import BertWeights, load_checkpoint, read_config, resolve_checkpoint
from mel.exporters.quantize import CalibrationSet, calibration_set, quantize_int8
from mel.exporters.variants import choose_auto, compare_to_fp32
from mel.models import MANIFEST_NAME, MODEL_FORMAT, PRECISIONS, VARIANT_FILES, ModelManifest, model_identity
from mel.records import MENTION_MARKER
from mel.runtime import load_onnxruntime

E5_PREFIXES = {"mention": "query: ", "entity": "passage: "}
NO_PREFIXES = {"mention": "", "entity": ""}
# Above this, the ONNX protobuf (2 GiB limit) keeps its weights in a side file.
_EXTERNAL_DATA_BYTES = 1_500_000_000


def add_marker(weights: BertWeights, tokenizer: Tokenizer, marker: str = MENTION_MARKER) -> tuple[BertWeights, int]:
    """Add `[M]` as a special token and give it an embedding row.

    Its id is one above every id the tokenizer already uses. The tokenizers
    library would otherwise take the model's vocabulary *size*, which is smaller
    than its largest id when a vocab.txt repeats a line (a repeated token keeps
    its last line's id), and `[M]` would overwrite a real token's row.
    The row is the mean of the used word embeddings: an "average token" that
    an un-fine-tuned model reads as near-neutral filler, so marking a mention
    changes its embedding little (tests/exporters/test_default_model.py), while
    fine-tuning is free to move it.
    """
    existing = tokenizer.token_to_id(marker)
    table = weights.arrays["embeddings.word_embeddings.weight"]
    if existing is not None and existing < table.shape[0]:
        return weights, existing  # a checkpoint that already has a trained marker (mel train output)
    used = sorted(set(tokenizer.get_vocab(with_added_tokens=True).values()))
    marker_id = used[-1] + 1
    _reserve_id(tokenizer, marker, marker_id)
    tokenizer.add_special_tokens([AddedToken(marker, special=True, normalized=False)])
    if tokenizer.token_to_id(marker) != marker_id:
        raise ModelError(f"{weights.source}: the tokenizer gave {marker} id {tokenizer.token_to_id(marker)}, "
                         f"not the free id {marker_id}")
    model_ids = [i for i in sorted(set(tokenizer.get_vocab(with_added_tokens=False).values()))
                 if i < table.shape[0] and i != marker_id]
    contiguous = model_ids == list(range(len(model_ids)))
    row = (table[: len(model_ids)] if contiguous else table[model_ids]).mean(axis=0)
    if marker_id < table.shape[0]:  # a spare (padding) row in the matrix
        table = table.copy()
        table[marker_id] = row
    elif marker_id == table.shape[0]:
        table = np.concatenate([table, row[None, :]], axis=0)
    else:
        raise ModelError(f"{weights.source}: tokenizer has {marker_id} tokens but the embedding matrix only "
                         f"{table.shape[0]} rows")
    arrays = {**weights.arrays, "embeddings.word_embeddings.weight": table}
    config = replace(weights.config, vocab_size=table.shape[0])
    return BertWeights(config=config, arrays=arrays, source=weights.source), marker_id


def _reserve_id(tokenizer: Tokenizer, token: str, token_id: int) -> None:
    """Put `token` into a dict-vocabulary model (WordPiece, BPE, WordLevel) at `token_id`, so that
    adding it as a special token keeps that id. Unigram vocabularies are lists, without gaps."""
    size = tokenizer.get_vocab_size(with_added_tokens=False)
    added = max(tokenizer.get_added_tokens_decoder(), default=-1)
    if token_id == (added + 1 if added >= size else size):
        return  # where tokenizers puts a new token anyway
    data = json.loads(tokenizer.to_str())
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        raise ModelError(f"cannot give {token} the free id {token_id}: the tokenizer's "
                         f"{data.get('model', {}).get('type')} vocabulary is not a token-to-id table")
    vocab[token] = token_id
    tokenizer.model = Tokenizer.from_str(json.dumps(data)).model


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Start, end and pad token ids, read off the tokenizer's own post-processor."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    if len(full) != len(plain) + 2 or full[1:-1] != plain:
        raise ModelError("tokenizer does not wrap inputs as <start> text <end> (not a BERT-family tokenizer?)")
    pad = next((found for t in ("[PAD]", "<pad>") if (found := tokenizer.token_to_id(t)) is not None), full[-1])
    return {"start": full[0], "end": full[-1], "pad": pad}


def load_tokenizer(folder: Path) -> Tokenizer:
    """tokenizer.json when present, else a WordPiece tokenizer from vocab.txt."""
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        settings = {}
        if (folder / "tokenizer_config.json").is_file():
            settings = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer = BertWordPieceTokenizer(str(folder / "vocab.txt"),
                                           lowercase=bool(settings.get("do_lower_case", False)))._tokenizer
    else:
        raise ModelError(f"{folder}: no tokenizer.json or vocab.txt")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def default_pooling(folder: Path, weights: BertWeights) -> str:
    """Pooling from the checkpoint itself: a mel manifest, a sentence-transformers
    pooling config, else the BERT pooler when the checkpoint has one (LEALLA, LaBSE)."""
    mel_manifest = folder / MANIFEST_NAME
    if mel_manifest.is_file():
        data = json.loads(mel_manifest.read_text())
        if data.get("pooling") in ("mean", "cls", "pooler"):
            return data["pooling"]
    st_pooling = folder / "1_Pooling" / "config.json"
    if st_pooling.is_file():
        data = json.loads(st_pooling.read_text())
        if data.get("pooling_mode_mean_tokens"):
            return "mean"
        if data.get("pooling_mode_cls_token"):
            return "pooler" if weights.has_pooler and (folder / "2_Dense").is_dir() else "cls"
    return "pooler" if weights.has_pooler else "mean"


def default_prefixes(folder: Path, source: str) -> dict[str, str]:
    mel_manifest = folder / MANIFEST_NAME
    if mel_manifest.is_file():
        data = json.loads(mel_manifest.read_text())
        if isinstance(data.get("prefixes"), dict):
            return data["prefixes"]
    _, raw = read_config(folder)
    # e5 models were trained with "query: " / "passage: " prefixes; LEALLA and LaBSE with none.
    words = re.split(r"[^a-z0-9]+", f"{source} {raw.get('_name_or_path', '')}".lower())
    return dict(E5_PREFIXES) if "e5" in words else dict(NO_PREFIXES)


def _save_onnx(model: onnx.ModelProto, path: Path) -> list[Path]:
    if model.ByteSize() > _EXTERNAL_DATA_BYTES:
        data_name = path.name + ".data"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        return [path, path.with_name(data_name)]
    onnx.save_model(model, str(path))
    return [path]


def _make_variant(fp32_path: Path, precision: str, folder: Path,
                  calibration: CalibrationSet | None) -> tuple[list[Path], dict]:
    """Write one variant beside model.onnx; returns its files and what the manifest records about it."""
    out = folder / VARIANT_FILES[precision]
    if precision == "int8":
        assert calibration is not None
        report = quantize_int8(fp32_path, out, calibration)
        report.update(compare_to_fp32(fp32_path, out, calibration))
        return [out], report
    load_onnxruntime()
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Min/Max are on the converter's float32 list, but without shape inference (which
    # the contrib operators defeat) it inserts no casts around them, and the graph would
    # not load (Max of a float16 norm and a float32 epsilon). Both are safe in float16.
    blocked = [op for op in DEFAULT_OP_BLOCK_LIST if op not in ("Min", "Max")]
    half = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True, disable_shape_infer=True,
                                    op_block_list=blocked)
    written = _save_onnx(half, out)
    del half
    return written, compare_to_fp32(fp32_path, out, calibration) if calibration is not None else {}


def write_model_folder(
    weights: BertWeights,
    tokenizer: Tokenizer,
    out: str | Path,
    *,
    source: str,
    pooling: str,
    prefixes: dict[str, str],
    max_length: int = 64,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    attention: str = "fused",
    force: bool = False,
    architecture: str = "BertModel",
) -> ModelManifest:
    """Export `weights` + `tokenizer` to a complete, checksummed model folder at `out`."""
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if max_length > weights.config.max_position_embeddings - weights.config.position_offset:
        raise ModelError(f"--max-length {max_length} exceeds the model's "
                         f"{weights.config.max_position_embeddings} positions")
    weights, marker_id = add_marker(weights, tokenizer)
    ids = special_ids(tokenizer)
    graph = build_bert_graph(weights, pooling, attention)
    with atomic_folder(out, force=force) as tmp:
        written = _save_onnx(graph, tmp / VARIANT_FILES["fp32"])
        del graph
        derived = [p for p in precisions if p != "fp32"]
        calibration = calibration_set(tokenizer, ids, prefixes, max_length) if derived else None
        variants = {}
        for precision in precisions:
            if precision != "fp32":
                variant_files, variants[precision] = _make_variant(tmp / VARIANT_FILES["fp32"], precision, tmp,
                                                                   calibration)
                written += variant_files
        auto = choose_auto(tmp, VARIANT_FILES, variants, calibration, max_length)
        tokenizer.save(str(tmp / "tokenizer.json"))
        written.append(tmp / "tokenizer.json")
        files = {p.name: sha256_file(p) for p in written}
        manifest = ModelManifest(
            format=MODEL_FORMAT,
            source=source,
            architecture=architecture,
            config=weights.config.to_json(),
            pooling=pooling,
            dim=weights.config.hidden_size,
            max_length=max_length,
            marker=MENTION_MARKER,
            marker_id=marker_id,
            special_ids=ids,
            prefixes=dict(prefixes),
            precisions=tuple(p for p in PRECISIONS if p == "fp32" or p in precisions),
            attention=attention,
            variants=variants,
            auto=auto,
            checksum=files[VARIANT_FILES["fp32"]],
            files=files,
            mel_version=__version__,
            tools=tool_versions(),
            command=command_line(),
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            identity=model_identity(files),
        )
        write_json(tmp / MANIFEST_NAME, manifest.to_json())
    return manifest


def export_checkpoint(
    source: str,
    out: str | Path,
    *,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    pooling: str | None = None,
    max_length: int = 64,
    prefixes: dict[str, str] | None = None,
    force: bool = False,
) -> ModelManifest:
    """`mel model export`: a Hugging Face folder or locally cached hub id -> model folder."""
    folder = resolve_checkpoint(source)
    weights = load_checkpoint(folder)
    tokenizer = load_tokenizer(folder)
    chosen = pooling or default_pooling(folder, weights)
    if chosen == "pooler" and not weights.has_pooler:
        raise ModelError(f"{source}: --pooling pooler needs pooler weights, which this checkpoint lacks "
                         "(use --pooling mean or cls)")
    _, raw = read_config(folder)
    arch = (raw.get("architectures") or ["BertModel"])[0]
    return write_model_folder(weights, tokenizer, out, source=os.fspath(source), pooling=chosen,
                              prefixes=prefixes or default_prefixes(folder, source), max_length=max_length,
                              precisions=precisions, force=force, architecture=arch)
