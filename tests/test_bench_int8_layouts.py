"""bench/bench_int8_layouts.py compares like with like: each rewrite of the int8 graph computes
the shipped graph's embeddings (the approximation, QuickGelu, only nearly)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]


def _layouts():
    spec = importlib.util.spec_from_file_location("bench_int8_layouts", ROOT / "bench" / "bench_int8_layouts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_layout_computes_the_shipped_embeddings(tiny_model):
    from mel.models import ModelFolder
    from mel.runtime import load_onnxruntime

    ort = load_onnxruntime()
    layouts = _layouts()
    shipped = onnx.load(str(ModelFolder.open(tiny_model).variant("int8")))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 90, size=(4, 12)).astype(np.int64)
    padded = np.ones_like(ids)
    padded[1, 7:] = padded[3, 3:] = 0  # rows of different lengths, as a real batch has
    unpadded = np.ones_like(ids)

    def embed(model, mask):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask})[0]

    variants = layouts.variants(shipped)
    masks = {"unpadded": unpadded, "padded": padded}
    reference = {kind: embed(shipped, mask) for kind, mask in masks.items()}
    assert set(variants) >= {"shipped", "mha_flash", "mha_masked", "plain_attention", "layer_norm_op",
                             "skip_layer_norm_op", "gelu_op", "erf_arithmetic", "quick_gelu"}
    for name, model in variants.items():
        ops = {n.op_type for n in model.graph.node}
        assert name == "shipped" or ops != {n.op_type for n in shipped.graph.node}, f"{name} rewrote nothing"
        # The unmasked flash path is right only for batches without padding.
        for kind in ["unpadded"] if name == "mha_flash" else masks:
            cosine = (embed(model, masks[kind]) * reference[kind]).sum(axis=1)
            floor = 0.99 if name == "quick_gelu" else 0.9999
            assert cosine.min() >= floor, (name, cosine)

