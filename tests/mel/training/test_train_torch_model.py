"""The training BERT matches transformers' BertModel, round-trips BertWeights, and
embeds exactly as the exported ONNX model does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mel.encoding import Encoder
from mel.exporters.checkpoints import load_checkpoint
from mel.exporters.model_folder import write_model_folder
from mel.mentions import MentionSpan
from mel.models import ModelFolder
from mel.training.source import load_source
from mel.training.torch_model import embed_tokens, encoder_from_weights, pad_batch, weights_from_encoder

transformers = pytest.importorskip("transformers")


def hf_embeddings(folder, ids, mask, pooling):
    model = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if pooling == "pooler":
        pooled = out.pooler_output
    elif pooling == "cls":
        pooled = out.last_hidden_state[:, 0]
    else:
        m = mask[..., None].float()
        pooled = (out.last_hidden_state * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1), out.last_hidden_state


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_matches_transformers_bert(tiny_checkpoint, pooling):
    weights = load_checkpoint(tiny_checkpoint)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, weights.config.vocab_size, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    expected, hidden = hf_embeddings(tiny_checkpoint, ids, mask, pooling)
    model = encoder_from_weights(weights, pooling).eval()
    assert set(model.bert.state_dict()) == set(transformers.BertModel.from_pretrained(tiny_checkpoint).state_dict())
    with torch.no_grad():
        got = model(ids, mask)
        ours = model.bert(ids, mask)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(ours[mask.bool()], hidden[mask.bool()], atol=1e-4)


def test_weights_round_trip_exactly(tiny_checkpoint):
    weights = load_checkpoint(tiny_checkpoint)
    back = weights_from_encoder(encoder_from_weights(weights, "pooler"))
    assert set(back.arrays) == set(weights.arrays)
    assert all(np.array_equal(back.arrays[name], weights.arrays[name]) for name in weights.arrays)
    assert back.config == weights.config


def test_dropout_only_while_training(tiny_checkpoint):
    model = encoder_from_weights(load_checkpoint(tiny_checkpoint), "mean", dropout=0.5)
    ids, mask = torch.randint(5, 60, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, mask), model(ids, mask))
        model.train()
        assert not torch.equal(model(ids, mask), model(ids, mask))


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_torch_embeddings_equal_the_exported_onnx_model(tiny_checkpoint, tmp_path, pooling):
    source = load_source(str(tiny_checkpoint), pooling=pooling)
    tokens = source.mention_tokenizer(64)
    text = "the king of france was in paris and the river is a capital of the country"
    rows = tokens.mentions([MentionSpan(text, text.index("paris"), text.index("paris") + 5)])
    rows += tokens.entities(["paris", "java"], ["capital of france", "island"])
    lengths = np.array([len(r) for r in rows])
    table = np.zeros((len(rows), lengths.max()), dtype=np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    model = encoder_from_weights(source.weights, source.pooling)
    got = embed_tokens(model, table, lengths, 0, torch.device("cpu"), batch_size=2)
    write_model_folder(source.weights, source.tokenizer, tmp_path / "model", source="test", pooling=pooling,
                       prefixes=source.prefixes, precisions=("fp32",))
    expected = Encoder(ModelFolder.open(tmp_path / "model"), precision="fp32").encode_ids(rows)
    assert (got * expected).sum(axis=1).min() > 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_marker_row_is_added_once(tiny_checkpoint):
    source = load_source(str(tiny_checkpoint))
    table = source.weights.arrays["embeddings.word_embeddings.weight"]
    assert source.marker_id == table.shape[0] - 1 == source.tokenizer.token_to_id("[M]")
    assert source.weights.config.vocab_size == table.shape[0]


def test_pad_batch_cuts_to_the_longest_row():
    table = np.array([[2, 9, 3, 0, 0], [2, 3, 0, 0, 0]], dtype=np.int32)
    ids, mask = pad_batch(table, np.array([3, 2]), 0, torch.device("cpu"))
    assert ids.tolist() == [[2, 9, 3], [2, 3, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, _ = pad_batch([[2, 3], [2, 8, 8, 3]], np.array([2, 4]), 0, torch.device("cpu"))
    assert ids.tolist() == [[2, 3, 0, 0], [2, 8, 8, 3]]


@pytest.mark.slow
def test_the_offline_default_trains_from_the_same_weights_it_exports(default_model):
    source = load_source("default")
    assert source.pooling == "mean" and source.prefixes == {"mention": "query: ", "entity": "passage: "}
    tokens = source.mention_tokenizer(64)
    texts = ["Paris", "París", "Berlin"]
    rows = tokens.texts(texts, role="mention")
    lengths = np.array([len(r) for r in rows])
    model = encoder_from_weights(source.weights, source.pooling)
    got = embed_tokens(model, rows, lengths, tokens.pad_id, torch.device("cpu"))
    encoder = Encoder(ModelFolder.open(default_model), precision="fp32")
    assert encoder.manifest.marker_id == source.marker_id
    expected = encoder.encode_texts(texts, role="mention")
    assert (got * expected).sum(axis=1).min() > 0.9999
