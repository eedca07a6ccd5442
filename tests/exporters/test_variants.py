"""Every variant embeds a text the same alone and in any batch; int8 is static; auto follows the export."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from mel.encoding import Encoder
from mel.errors import ModelError
from mel.exporters import quantize
from mel.exporters.model_folder import export_checkpoint
from mel.models import MANIFEST_NAME, ModelFolder

SHORT = "Paris"
OTHERS = ["The president of France met the German chancellor in Berlin on Monday to discuss the prices of "
          "energy, trains and schools in the capital city and in the country",
          "rome", "a song of the river", "the king and the queen of spain visited the museum in london"]


@pytest.fixture(scope="module")
def three_variants(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / "model"
    export_checkpoint(str(tiny_checkpoint), out, precisions=("fp32", "int8", "fp16"))
    return out


def alone_and_mixed(encoder: Encoder) -> tuple[np.ndarray, list[np.ndarray]]:
    alone = encoder.encode_texts([SHORT])[0]
    mixed = []
    for others in (OTHERS[:1], OTHERS, OTHERS[::-1] * 20):  # beside a long text, several, many (2 batches)
        texts = others[: len(others) // 2] + [SHORT] + others[len(others) // 2:]
        mixed.append(encoder.encode_texts(texts)[len(others) // 2])
    return alone, mixed


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_a_text_embeds_the_same_alone_and_in_any_batch(three_variants, precision):
    encoder = Encoder(ModelFolder.open(three_variants), device="cpu", precision=precision, batch_size=32)
    alone, mixed = alone_and_mixed(encoder)
    for vector in mixed:
        assert float(alone @ vector) >= 0.99999, precision
    again = encoder.encode_texts([SHORT])[0]
    assert np.array_equal(alone, again)  # deterministic for a fixed input


def test_default_model_int8_is_batch_independent(default_model):
    encoder = Encoder(ModelFolder.open(default_model), device="cpu", precision="int8")
    alone, mixed = alone_and_mixed(encoder)
    assert min(float(alone @ v) for v in mixed) >= 0.99999


def test_int8_is_static_and_recorded_in_the_manifest(three_variants):
    graph = onnx.load(str(three_variants / "model.int8.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "DynamicQuantizeLinear" not in ops  # activation scales are fixed at export
    assert {"QuantizeLinear", "MatMulIntegerToFloat", "QAttention"} <= ops
    manifest = ModelFolder.open(three_variants).manifest
    int8 = manifest.variants["int8"]
    assert int8["method"] == "static" and int8["calibration"]["sha256"] == quantize.CALIBRATION_SHA256
    assert int8["cosine_to_fp32_mean"] >= 0.998 and int8["check_texts"] > 100
    assert manifest.variants["fp16"]["cosine_to_fp32_mean"] >= 0.999
    assert manifest.auto["cuda"] == "fp16" and manifest.auto["cpu"] in ("int8", "fp32")


def test_auto_runs_the_variant_the_export_chose(three_variants, tmp_path):
    assert Encoder(ModelFolder.open(three_variants), device="cpu").precision == \
        ModelFolder.open(three_variants).manifest.auto["cpu"]
    data = json.loads((three_variants / MANIFEST_NAME).read_text())
    for chosen in ("fp32", "int8"):
        data["auto"] = {"cpu": chosen, "cuda": "fp16"}
        (tmp_path / "m").mkdir(exist_ok=True)
        for f in three_variants.iterdir():
            target = tmp_path / "m" / f.name
            if not target.exists():
                target.symlink_to(f)
        (tmp_path / "m" / MANIFEST_NAME).unlink()
        (tmp_path / "m" / MANIFEST_NAME).write_text(json.dumps(data))
        assert Encoder(ModelFolder.open(tmp_path / "m"), device="cpu").precision == chosen
    del data["auto"]  # a folder exported before the choice was recorded: int8 on CPU, as before
    (tmp_path / "m" / MANIFEST_NAME).write_text(json.dumps(data))
    assert Encoder(ModelFolder.open(tmp_path / "m"), device="cpu").precision == "int8"


def test_damaged_calibration_file_is_refused(monkeypatch):
    monkeypatch.setattr(quantize, "CALIBRATION_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="calibration.jsonl: checksum mismatch"):
        quantize.calibration_texts()
