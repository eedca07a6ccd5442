"""`mel model export`: ONNX embeddings equal transformers' torch embeddings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.encoding import Encoder
from mel.exporters.checkpoints import load_checkpoint, read_safetensors
from mel.models import ModelFolder
from tests.conftest import make_tiny_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def torch_embeddings(folder, ids, mask, pooling):
    model = transformers.BertModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if pooling == "pooler":
        pooled = out.pooler_output
    elif pooling == "cls":
        pooled = out.last_hidden_state[:, 0]
    else:
        m = torch.tensor(mask)[..., None].float()
        pooled = (out.last_hidden_state * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def sample_batch(vocab_size, rows=6, width=20, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(rows, width))
    ids[:, 0] = 2  # [CLS]
    mask = np.ones_like(ids)
    for r in range(rows):  # ragged lengths, padded with [PAD]
        length = int(rng.integers(4, width + 1))
        ids[r, length - 1] = 3
        ids[r, length:] = 0
        mask[r, length:] = 0
    return ids, mask


def test_tiny_lealla_fp32_and_int8_match_torch(tiny_checkpoint, tiny_model):
    manifest = ModelFolder.open(tiny_model).manifest
    assert manifest.pooling == "pooler"  # LEALLA layout: pooler present -> pooler output
    assert manifest.prefixes == {"mention": "", "entity": ""}
    ids, mask = sample_batch(manifest.config["vocab_size"] - 1)
    expected = torch_embeddings(tiny_checkpoint, ids, mask, "pooler")
    for precision, floor in (("fp32", 0.9999), ("int8", 0.99)):
        encoder = Encoder(ModelFolder.open(tiny_model), device="cpu", precision=precision)
        got = encoder.encode_ids([list(row[m.astype(bool)]) for row, m in zip(ids, mask)])
        cosines = (got * expected).sum(axis=1)
        assert cosines.min() >= floor, (precision, cosines)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_other_poolings_match_torch(tiny_checkpoint, tmp_path, pooling):
    out = tmp_path / pooling
    result = CliRunner().invoke(main, ["model", "export", str(tiny_checkpoint), "-o", str(out),
                                       "--pooling", pooling])
    assert result.exit_code == 0, result.output
    ids, mask = sample_batch(60)
    expected = torch_embeddings(tiny_checkpoint, ids, mask, pooling)
    got = Encoder(ModelFolder.open(out), precision="fp32").encode_ids(
        [list(row[m.astype(bool)]) for row, m in zip(ids, mask)])
    assert (got * expected).sum(axis=1).min() >= 0.9999


def test_pytorch_bin_checkpoint_and_sentence_transformers_pooling(tmp_path):
    folder = make_tiny_checkpoint(tmp_path / "bin-ckpt", safetensors=False, seed=3)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    result = CliRunner().invoke(main, ["model", "export", str(folder), "-o", str(tmp_path / "out"),
                                       "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    manifest = ModelFolder.open(tmp_path / "out").manifest
    assert manifest.pooling == "mean"
    assert manifest.precisions == ("fp32", "fp16")
    ids, mask = sample_batch(60, seed=5)
    expected = torch_embeddings(folder, ids, mask, "mean")
    got = Encoder(ModelFolder.open(tmp_path / "out"), precision="fp32").encode_ids(
        [list(row[m.astype(bool)]) for row, m in zip(ids, mask)])
    assert (got * expected).sum(axis=1).min() >= 0.9999


def test_marker_is_a_special_token_with_a_new_row(tiny_checkpoint, tiny_model):
    from tokenizers import Tokenizer

    manifest = ModelFolder.open(tiny_model).manifest
    original_rows = load_checkpoint(tiny_checkpoint).config.vocab_size
    assert manifest.marker_id == original_rows  # appended after the WordPiece vocabulary
    assert manifest.config["vocab_size"] == original_rows + 1
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    ids = tokenizer.encode("the [M] paris [M] city", add_special_tokens=False).ids
    assert ids.count(manifest.marker_id) == 2


def test_hub_id_from_local_cache(tiny_checkpoint, tmp_path, monkeypatch):
    repo = tmp_path / "hf" / "hub" / "models--toy--tiny-lealla"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in tiny_checkpoint.iterdir():
        os.symlink(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    result = CliRunner().invoke(main, ["model", "export", "toy/tiny-lealla", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert ModelFolder.open(tmp_path / "m").manifest.source == "toy/tiny-lealla"

    missing = CliRunner().invoke(main, ["model", "export", "toy/absent", "-o", str(tmp_path / "n")])
    assert missing.exit_code == 1
    assert "not in the Hugging Face cache" in missing.output or "Hugging Face cache" in missing.output
    assert "huggingface-cli download toy/absent" in missing.output
    assert not (tmp_path / "n").exists()


def test_safetensors_reader_handles_bf16(tmp_path):
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    values = np.array([1.5, -2.0], dtype=np.float32).view(np.uint32) >> 16
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + values.astype(np.uint16).tobytes())
    assert read_safetensors(path)["w"].tolist() == [1.5, -2.0]
