"""`[M]` gets an id no real token has, also when vocab.txt repeats a line."""

from __future__ import annotations

import numpy as np
import pytest

from mel.encoding import Encoder
from mel.exporters.model_folder import export_checkpoint
from mel.models import ModelFolder
from tests.conftest import make_tiny_checkpoint
from tests.exporters.test_export import torch_embeddings

transformers = pytest.importorskip("transformers")


def test_repeated_vocab_line_keeps_every_token_row(tmp_path):
    # "##9" and "paris" appear twice: each keeps its last line's id, so the tokenizer has
    # fewer tokens than its largest id + 1, and the first lines' rows are never used.
    folder = make_tiny_checkpoint(tmp_path / "ckpt", seed=11, repeated=("##9", "paris"))
    lines = (folder / "vocab.txt").read_text().splitlines()
    out = tmp_path / "model"
    export_checkpoint(str(folder), out, precisions=("fp32",))
    manifest = ModelFolder.open(out).manifest
    assert manifest.marker_id == len(lines)  # above every used id (the last line's)
    assert manifest.config["vocab_size"] == len(lines) + 1

    reference = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False)
    encoder = Encoder(ModelFolder.open(out), device="cpu", precision="fp32")
    text = "paris 1999 ##9 in the city of rome, 2019"
    assert encoder.tokens.tokenizer.encode(text).ids == reference(text)["input_ids"]
    paris = len(lines) - 1  # its second line
    assert encoder.tokens.tokenizer.encode("[M] paris [M]").ids == [2, manifest.marker_id, paris, manifest.marker_id, 3]

    # Token for token: every id the tokenizer can produce embeds as transformers embeds it.
    used = sorted(set(reference.vocab.values()))
    assert lines.index("##9") not in used and len(lines) - 2 in used  # the first "##9" line is a hole
    assert lines.index("paris") not in used and paris in used
    ids = np.array([[2, i, 3] for i in used])
    expected = torch_embeddings(folder, ids, np.ones_like(ids), "pooler")
    got = encoder.encode_ids(ids.tolist())
    assert (got * expected).sum(axis=1).min() >= 0.99999
