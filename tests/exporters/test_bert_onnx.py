"""The ONNX graph builder and the CPU rewrite of its layer norms."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mel.exporters.bert_onnx import build_bert_graph, with_primitive_layer_norms
from mel.exporters.checkpoints import load_checkpoint
from mel.models import VARIANT_FILES

LAYER_NORMS = {"LayerNormalization", "SkipLayerNormalization"}


def run(model: onnx.ModelProto, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


@pytest.mark.parametrize("attention", ["fused", "standard"])
def test_primitive_layer_norms_give_the_same_embeddings(tiny_checkpoint, attention):
    weights = load_checkpoint(tiny_checkpoint)
    fused = build_bert_graph(weights, "pooler", attention)
    norms = sum(node.op_type in LAYER_NORMS for node in fused.graph.node)
    assert norms == 1 + 2 * weights.config.num_hidden_layers
    rewritten = with_primitive_layer_norms(copy.deepcopy(fused))
    ops = [node.op_type for node in rewritten.graph.node]
    assert not LAYER_NORMS & set(ops)
    assert ops.count("ReduceMean") == 2 * norms  # mean and variance for each
    onnx.checker.check_model(rewritten)

    rng = np.random.default_rng(3)
    ids = rng.integers(5, weights.config.vocab_size, size=(4, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    expected, got = run(fused, ids, mask), run(rewritten, ids, mask)
    assert np.abs(got - expected).max() < 1e-5


def test_int8_variant_is_built_from_the_rewritten_graph(tiny_model):
    fp32_ops = {node.op_type for node in onnx.load(str(tiny_model / VARIANT_FILES["fp32"])).graph.node}
    int8_ops = {node.op_type for node in onnx.load(str(tiny_model / VARIANT_FILES["int8"])).graph.node}
    assert "SkipLayerNormalization" in fp32_ops  # model.onnx keeps the kernels CUDA runs best
    assert not LAYER_NORMS & int8_ops
    assert "QAttention" in int8_ops
