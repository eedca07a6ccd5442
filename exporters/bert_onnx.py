"""Build a BERT encoder ONNX graph straight from weight arrays (no torch).

Inputs are `input_ids` and `attention_mask` (int64, [batch, sequence]); the
output `embedding` ([batch, dim], float32) is pooled and L2-normalised inside
the graph, so every runtime that loads a mel model folder gets the same vector.

Two attention layouts are emitted:
- "fused" (default): onnxruntime's contrib operators (Attention,
  SkipLayerNormalization, BiasGelu), which CPU and CUDA execution providers
  both implement and which dynamic int8 quantisation turns into QAttention.
- "standard": plain ONNX opset-17 operators, for runtimes without contrib ops.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mel.exporters.checkpoints import BertWeights

OPSET = 17
POOLINGS = ("mean", "cls", "pooler")
ATTENTION_LAYOUTS = ("fused", "standard")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"


class _Graph:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, domain: str = "", **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", domain=domain, **attrs))
        return out


def _layer_norm(g: _Graph, x: str, gamma: np.ndarray, beta: np.ndarray, eps: float) -> str:
    return g.op("LayerNormalization", [x, g.const("ln_w", gamma), g.const("ln_b", beta)], axis=-1, epsilon=eps)


def _linear(g: _Graph, x: str, weight: np.ndarray, bias: np.ndarray, hint: str) -> str:
    # HF stores Linear weights as [out, in]; MatMul wants [in, out].
    y = g.op("MatMul", [x, g.const(hint + "_w", weight.T)], hint)
    return g.op("Add", [y, g.const(hint + "_b", bias)], hint + "_out")


def _gelu(g: _Graph, x: str) -> str:
    # Exact (erf) GELU, as BERT uses; onnxruntime fuses this pattern.
    scaled = g.op("Mul", [x, g.const("inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))])
    erf = g.op("Erf", [scaled])
    one_plus = g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))])
    half_x = g.op("Mul", [x, g.const("half", np.array(0.5, np.float32))])
    return g.op("Mul", [half_x, one_plus], "gelu")


def _standard_layer(g: _Graph, x: str, w: dict, prefix: str, cfg, mask_bias: str) -> str:
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    split_shape = g.const("split_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = g.const("merge_shape", np.array([0, 0, cfg.hidden_size], np.int64))

    def project(name: str, perm: list[int]) -> str:
        y = _linear(g, x, w[f"{prefix}attention.self.{name}.weight"], w[f"{prefix}attention.self.{name}.bias"], name)
        return g.op("Transpose", [g.op("Reshape", [y, split_shape])], perm=perm)

    q = project("query", [0, 2, 1, 3])  # [B, h, S, d]
    k = project("key", [0, 2, 3, 1])  # [B, h, d, S]
    v = project("value", [0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], "scores")
    scores = g.op("Mul", [scores, g.const("scale", np.array(1 / math.sqrt(head_dim), np.float32))])
    probs = g.op("Softmax", [g.op("Add", [scores, mask_bias])], axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, merge_shape])
    attn = _linear(g, context, w[f"{prefix}attention.output.dense.weight"], w[f"{prefix}attention.output.dense.bias"],
                   "attn_out")
    x = _layer_norm(g, g.op("Add", [attn, x]), w[f"{prefix}attention.output.LayerNorm.weight"],
                    w[f"{prefix}attention.output.LayerNorm.bias"], cfg.layer_norm_eps)
    inter = _gelu(g, _linear(g, x, w[f"{prefix}intermediate.dense.weight"], w[f"{prefix}intermediate.dense.bias"],
                             "ffn_in"))
    out = _linear(g, inter, w[f"{prefix}output.dense.weight"], w[f"{prefix}output.dense.bias"], "ffn_out")
    return _layer_norm(g, g.op("Add", [out, x]), w[f"{prefix}output.LayerNorm.weight"],
                       w[f"{prefix}output.LayerNorm.bias"], cfg.layer_norm_eps)


def _fused_layer(g: _Graph, x: str, w: dict, prefix: str, cfg, mask_index: str) -> str:
    ms = "com.microsoft"
    qkv_w = np.concatenate([w[f"{prefix}attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
    qkv_b = np.concatenate([w[f"{prefix}attention.self.{n}.bias"] for n in ("query", "key", "value")])
    context = g.op("Attention", [x, g.const("qkv_w", qkv_w), g.const("qkv_b", qkv_b), mask_index], "attention",
                   domain=ms, num_heads=cfg.num_attention_heads)
    attn = g.op("MatMul", [context, g.const("attn_out_w", w[f"{prefix}attention.output.dense.weight"].T)], "attn_out")
    x = g.op("SkipLayerNormalization",
             [attn, x, g.const("ln_w", w[f"{prefix}attention.output.LayerNorm.weight"]),
              g.const("ln_b", w[f"{prefix}attention.output.LayerNorm.bias"]),
              g.const("attn_out_b", w[f"{prefix}attention.output.dense.bias"])],
             "skip_ln", domain=ms, epsilon=cfg.layer_norm_eps)
    inter = g.op("MatMul", [x, g.const("ffn_in_w", w[f"{prefix}intermediate.dense.weight"].T)], "ffn_in")
    inter = g.op("BiasGelu", [inter, g.const("ffn_in_b", w[f"{prefix}intermediate.dense.bias"])], "gelu", domain=ms)
    out = g.op("MatMul", [inter, g.const("ffn_out_w", w[f"{prefix}output.dense.weight"].T)], "ffn_out")
    return g.op("SkipLayerNormalization",
                [out, x, g.const("ln_w", w[f"{prefix}output.LayerNorm.weight"]),
                 g.const("ln_b", w[f"{prefix}output.LayerNorm.bias"]),
                 g.const("ffn_out_b", w[f"{prefix}output.dense.bias"])],
                "skip_ln", domain=ms, epsilon=cfg.layer_norm_eps)


def _pool(g: _Graph, hidden: str, mask_f: str, pooling: str, w: dict) -> str:
    if pooling == "mean":
        mask3 = g.op("Unsqueeze", [mask_f, g.const("axes", np.array([2], np.int64))])
        summed = g.op("ReduceSum", [g.op("Mul", [hidden, mask3]), g.const("axes", np.array([1], np.int64))],
                      keepdims=0)
        count = g.op("ReduceSum", [mask_f, g.const("axes", np.array([1], np.int64))], keepdims=1)
        count = g.op("Max", [count, g.const("one", np.array(1.0, np.float32))])
        return g.op("Div", [summed, count], "mean_pool")
    first = g.op("Slice", [hidden, g.const("start", np.array([0], np.int64)), g.const("end", np.array([1], np.int64)),
                           g.const("axes", np.array([1], np.int64))], "cls")
    first = g.op("Squeeze", [first, g.const("axes", np.array([1], np.int64))], "cls_token")
    if pooling == "cls":
        return first
    dense = _linear(g, first, w["pooler.dense.weight"], w["pooler.dense.bias"], "pooler")
    return g.op("Tanh", [dense], "pooler_out")


def build_bert_graph(weights: BertWeights, pooling: str, attention: str = "fused") -> onnx.ModelProto:
    """The encoder as an ONNX model: (input_ids, attention_mask) -> L2-normalised embedding."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}")
    if attention not in ATTENTION_LAYOUTS:
        raise ValueError(f"attention must be one of {ATTENTION_LAYOUTS}")
    cfg = weights.config
    w = weights.arrays
    if pooling == "pooler" and "pooler.dense.weight" not in w:
        raise ValueError(f"{weights.source}: pooling 'pooler' needs pooler weights, which this checkpoint lacks")
    g = _Graph()

    # Embeddings: word + position + token type 0, then LayerNorm.
    words = g.op("Gather", [g.const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"], "words")
    # Positions are a slice of the table ([offset, offset + S)), which avoids Range over
    # a scalar (onnxruntime's optimiser rewrites that into an invalid Slice).
    seq_len = g.op("Slice", [g.op("Shape", ["input_ids"]), g.const("one_i", np.array([1], np.int64)),
                             g.const("two_i", np.array([2], np.int64))], "seq_len")
    offset = np.array([cfg.position_offset], np.int64)
    end = g.op("Add", [seq_len, g.const("pos_start", offset)])
    pos_emb = g.op("Slice", [g.const("pos_emb", w["embeddings.position_embeddings.weight"]),
                             g.const("pos_start", offset), end, g.const("axes", np.array([0], np.int64))], "pos_emb")
    type_row = w["embeddings.token_type_embeddings.weight"][0]
    x = g.op("Add", [g.op("Add", [words, pos_emb]), g.const("type_emb", type_row)], "emb_sum")
    x = _layer_norm(g, x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)

    mask_f = g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    if attention == "fused":
        mask = g.op("Cast", ["attention_mask"], "mask_index", to=TensorProto.INT32)
    else:
        # (1 - mask) * -10000 broadcast to [B, 1, 1, S], as BERT does.
        inverted = g.op("Sub", [g.const("one", np.array(1.0, np.float32)), mask_f])
        bias = g.op("Mul", [inverted, g.const("neg", np.array(-10000.0, np.float32))])
        mask = g.op("Unsqueeze", [bias, g.const("axes", np.array([1, 2], np.int64))], "mask_bias")
    layer = _fused_layer if attention == "fused" else _standard_layer
    for i in range(cfg.num_hidden_layers):
        x = layer(g, x, w, f"encoder.layer.{i}.", cfg, mask)

    pooled = _pool(g, x, mask_f, pooling, w)
    norm = g.op("ReduceL2", [pooled], "l2", axes=[1], keepdims=1)  # axes is an attribute until opset 18
    norm = g.op("Max", [norm, g.const("eps", np.array(1e-12, np.float32))])
    g.nodes.append(helper.make_node("Div", [pooled, norm], [OUTPUT_NAME], name="l2_normalise"))

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in INPUT_NAMES]
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", cfg.hidden_size])
    graph = helper.make_graph(g.nodes, "mel_bert_encoder", inputs, [output], g.initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    if attention == "fused":
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="mel")
    model.ir_version = 8
    return model


def with_primitive_layer_norms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite (Skip)LayerNormalization nodes as ReduceMean/Sub/Mul/Sqrt arithmetic, in place.

    onnxruntime's CPU kernels for both layer norms are slow (about 4 ms for a
    64 x 64 x 384 batch on this project's 2-core machine), while the same maths
    as elementwise operators runs in about 1.2 ms. Layer norms fall from a fifth
    of int8 inference time to a fourteenth, and the default model goes from 140
    to 160 texts/s (bench/bench_encoder.py). The CPU-only int8 variant is built from the
    rewritten graph; model.onnx keeps the fused kernels, which CUDA runs best.
    The arithmetic is BERT's (biased variance, epsilon inside the root); the
    bias is added before the residual so that quantisation folds it into the
    preceding MatMul.
    """
    graph = model.graph
    g = _Graph()  # its names all start "cpu_ln_", which the graph builder never uses
    nodes = []
    for node in graph.node:
        if node.op_type not in ("LayerNormalization", "SkipLayerNormalization"):
            nodes.append(node)
            continue
        if len(node.output) > 1 and any(node.output[1:]):
            raise ValueError(f"{node.name}: layer norm statistics outputs are not supported")
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        if node.op_type == "SkipLayerNormalization":
            x, skip, gamma, beta = node.input[:4]
            if len(node.input) > 4 and node.input[4]:
                x = g.op("Add", [x, node.input[4]], "cpu_ln_biased")
            x = g.op("Add", [x, skip], "cpu_ln_sum")
        else:
            x, gamma, beta = node.input[:3]
        centred = g.op("Sub", [x, g.op("ReduceMean", [x], "cpu_ln_mean", axes=[-1], keepdims=1)], "cpu_ln_centred")
        squared = g.op("Mul", [centred, centred], "cpu_ln_squared")
        variance = g.op("ReduceMean", [squared], "cpu_ln_var", axes=[-1], keepdims=1)  # axes: attribute in opset 17
        variance = g.op("Add", [variance, g.const("cpu_ln_eps", np.array(eps, np.float32))], "cpu_ln_var_eps")
        std = g.op("Sqrt", [variance], "cpu_ln_std")
        normed = g.op("Mul", [centred, g.op("Reciprocal", [std], "cpu_ln_inv_std")], "cpu_ln_normed")
        scaled = g.op("Mul", [normed, gamma], "cpu_ln_scaled")
        g.nodes.append(helper.make_node("Add", [scaled, beta], [node.output[0]], name=node.name or g.name("cpu_ln")))
        nodes.extend(g.nodes)
        g.nodes = []
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.initializers)
    return model
