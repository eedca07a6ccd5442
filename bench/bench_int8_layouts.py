"""Other operator layouts for the int8 encoder, timed against the graph mel ships.

    python bench/bench_int8_layouts.py [--rounds 8] [--threads 2] [--work /tmp/mel-bench-encoder]
                                       [--out bench/results/int8_layouts.json]

Where the LEALLA-small shape's time goes is in onnxruntime's kernels (bench_encoder.py
--profile: attention about 40%, GELU 13-18%, layer-norm arithmetic about 18%). This script
asks whether another layout of the same maths runs those parts faster. It builds the
LEALLA-small-shaped export (bench/lealla_shape.py, once in --work, as bench_encoder.py does),
rewrites copies of its int8 graph, and times each copy in its own session on 512 texts of 64
tokens, 24 a batch (the encoder's automatic size for them), the variants interleaved round by
round (best and median texts/s), with the worst cosine of each variant's embeddings to the
shipped graph's:

- shipped: QAttention, BiasGelu, layer norms as elementwise arithmetic;
- mha_flash: the QKV product as MatMulIntegerToFloat, then MultiHeadAttention without a
  mask, which takes onnxruntime's CPU flash-attention path (right only for unpadded batches);
- mha_masked: the same with the key padding mask (onnxruntime's unfused path);
- plain_attention: attention as standard operators (batched MatMul, Softmax);
- layer_norm_op / skip_layer_norm_op: the layer norms as LayerNormalization or
  SkipLayerNormalization kernels;
- gelu_op: the bias Add and com.microsoft Gelu; erf_arithmetic: GELU as Mul/Erf/Add;
- quick_gelu: x * sigmoid(1.702 x), an approximation (its cosine shows the cost).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

MS = "com.microsoft"
BATCH, LENGTH, TEXTS = 24, 64, 512


def _constants(graph: onnx.GraphProto, **arrays) -> None:
    have = {i.name for i in graph.initializer}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items() if k not in have)


def _replace(model: onnx.ModelProto, op_type: str, rewrite) -> onnx.ModelProto:
    """A copy of `model` with each `op_type` node replaced by the nodes `rewrite(node)` returns."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        nodes.extend(rewrite(node, out.graph) if node.op_type == op_type else [node])
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _qkv(node: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str, str]:
    """QAttention's QKV product alone, as MatMulIntegerToFloat with the bias: (nodes, qkv, output)."""
    x, w, b, x_scale, w_scale, _mask, x_zero, w_zero = node.input[:8]
    out = node.output[0]
    return [helper.make_node("MatMulIntegerToFloat", [x, w, x_scale, w_scale, x_zero, w_zero, b], [out + "_qkv"],
                             domain=MS)], out + "_qkv", out


def mha(model: onnx.ModelProto, masked: bool) -> onnx.ModelProto:
    hidden, heads = _attention_shape(model)

    def rewrite(node, graph):
        _constants(graph, layout_thirds=np.array([hidden] * 3, np.int64))
        nodes, qkv, out = _qkv(node)
        q, k, v = out + "_q", out + "_k", out + "_v"
        nodes.append(helper.make_node("Split", [qkv, "layout_thirds"], [q, k, v], axis=2))
        inputs = [q, k, v, "", "layout_key_mask"] if masked else [q, k, v]
        nodes.append(helper.make_node("MultiHeadAttention", inputs, [out], domain=MS, num_heads=heads))
        return nodes

    out = _replace(model, "QAttention", rewrite)
    if masked:
        cast = helper.make_node("Cast", ["attention_mask"], ["layout_key_mask"], to=TensorProto.INT32)
        out.graph.node.insert(0, cast)
    return out


def plain_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    hidden, heads = _attention_shape(model)
    size = hidden // heads

    def rewrite(node, graph):
        _constants(graph, layout_shape5=np.array([0, 0, 3, heads, size], np.int64),
                   layout_shape3=np.array([0, 0, hidden], np.int64), layout_ones3=np.array([1, 1, 1], np.int64),
                   layout_axis0=np.array([0], np.int64), layout_scale=np.array(1 / np.sqrt(size), np.float32))
        nodes, qkv, out = _qkv(node)
        p = out + "_"
        make = helper.make_node
        nodes += [
            make("Reshape", [qkv, "layout_shape5"], [p + "r"]),
            make("Transpose", [p + "r"], [p + "t"], perm=[2, 0, 3, 1, 4]),  # 3, batch, heads, tokens, size
            make("Split", [p + "t", "layout_ones3"], [p + "q3", p + "k3", p + "v3"], axis=0),
            *(make("Squeeze", [p + f"{n}3", "layout_axis0"], [p + n]) for n in "qkv"),
            make("Transpose", [p + "k"], [p + "kt"], perm=[0, 1, 3, 2]),
            make("Mul", [p + "q", "layout_scale"], [p + "qs"]),
            make("MatMul", [p + "qs", p + "kt"], [p + "scores"]),
            make("Add", [p + "scores", "layout_mask_bias"], [p + "masked"]),
            make("Softmax", [p + "masked"], [p + "probs"], axis=-1),
            make("MatMul", [p + "probs", p + "v"], [p + "context"]),
            make("Transpose", [p + "context"], [p + "context_t"], perm=[0, 2, 1, 3]),
            make("Reshape", [p + "context_t", "layout_shape3"], [out]),
        ]
        return nodes

    out = _replace(model, "QAttention", rewrite)
    _constants(out.graph, layout_minus=np.array(-10000.0, np.float32), layout_one=np.array(1.0, np.float32),
               layout_axes12=np.array([1, 2], np.int64))
    make = helper.make_node
    mask_nodes = [
        make("Cast", ["attention_mask"], ["layout_mask_f"], to=TensorProto.FLOAT),
        make("Sub", ["layout_one", "layout_mask_f"], ["layout_pad"]),
        make("Mul", ["layout_pad", "layout_minus"], ["layout_pad_bias"]),
        make("Unsqueeze", ["layout_pad_bias", "layout_axes12"], ["layout_mask_bias"]),  # batch, 1, 1, tokens
    ]
    for position, node in enumerate(mask_nodes):
        out.graph.node.insert(position, node)
    return out


def layer_norm_ops(model: onnx.ModelProto, skip: bool) -> onnx.ModelProto:
    """The arithmetic layer norms (exporters/bert_onnx.py with_primitive_layer_norms) folded back
    into one kernel each; with `skip`, the residual Add before them too."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    removed, placed = set(), {}
    for node in graph.node:
        if node.op_type != "ReduceMean" or not node.output[0].startswith("cpu_ln_mean"):
            continue
        x = node.input[0]
        sub = next(c for c in consumers[x] if c.op_type == "Sub")
        # The centred values feed the square and the normalising Mul: start from the square.
        current = next(c for c in consumers[sub.output[0]] if c.op_type == "Mul" and c.input[0] == c.input[1])
        chain = [node, sub, current]
        for _ in range(6):  # ReduceMean, Add (eps), Sqrt, Reciprocal, Mul (normalise), Mul (gamma)
            current = consumers[current.output[0]][0]
            chain.append(current)
        final = consumers[current.output[0]][0]  # Add (beta)
        chain.append(final)
        gamma, beta = current.input[1], final.input[1]
        eps_add = chain[4]  # after ReduceMean, Sub, the square and the variance's ReduceMean
        eps = float(numpy_helper.to_array(inits[eps_add.input[1]]).reshape(-1)[0])
        anchor, before = node, producer.get(x)
        if skip and before is not None and before.op_type == "Add" and x.startswith("cpu_ln_sum"):
            chain.append(before)
            anchor = before
            fused = helper.make_node("SkipLayerNormalization", [*before.input[:2], gamma, beta], [final.output[0]],
                                     domain=MS, epsilon=eps)
        else:
            fused = helper.make_node("LayerNormalization", [x, gamma, beta], [final.output[0]], axis=-1, epsilon=eps)
        removed.update(id(n) for n in chain)
        placed[id(anchor)] = fused
    nodes = [placed.get(id(n), n) for n in graph.node if id(n) in placed or id(n) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def gelu(model: onnx.ModelProto, form: str) -> onnx.ModelProto:
    def rewrite(node, graph):
        x, bias = node.input
        out = node.output[0]
        nodes = [helper.make_node("Add", [x, bias], [out + "_biased"])]
        if form == "gelu_op":
            return nodes + [helper.make_node("Gelu", [out + "_biased"], [out], domain=MS)]
        if form == "quick_gelu":
            return nodes + [helper.make_node("QuickGelu", [out + "_biased"], [out], domain=MS, alpha=1.702)]
        _constants(graph, layout_root_half=np.array(1 / np.sqrt(2), np.float32),
                   layout_half=np.array(0.5, np.float32), layout_one=np.array(1.0, np.float32))
        make, b = helper.make_node, out + "_biased"
        return nodes + [make("Mul", [b, "layout_root_half"], [out + "_s"]), make("Erf", [out + "_s"], [out + "_e"]),
                        make("Add", [out + "_e", "layout_one"], [out + "_e1"]),
                        make("Mul", [b, "layout_half"], [out + "_h"]), make("Mul", [out + "_h", out + "_e1"], [out])]

    return _replace(model, "BiasGelu", rewrite)


def _attention_shape(model: onnx.ModelProto) -> tuple[int, int]:
    """(hidden size, heads) of the graph's QAttention nodes."""
    node = next(n for n in model.graph.node if n.op_type == "QAttention")
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    return int(weight.dims[1]) // 3, next(a.i for a in node.attribute if a.name == "num_heads")


def variants(model: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    return {"shipped": model, "mha_flash": mha(model, masked=False), "mha_masked": mha(model, masked=True),
            "plain_attention": plain_attention(model), "layer_norm_op": layer_norm_ops(model, skip=False),
            "skip_layer_norm_op": layer_norm_ops(model, skip=True), "gelu_op": gelu(model, "gelu_op"),
            "erf_arithmetic": gelu(model, "erf"), "quick_gelu": gelu(model, "quick_gelu")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/mel-bench-encoder")
    parser.add_argument("--out", default="bench/results/int8_layouts.json")
    args = parser.parse_args()
    from bench_encoder import lealla_model, make_inputs

    from mel.encoding import Encoder
    from mel.models import ModelFolder
    from mel.runtime import load_onnxruntime

    ort = load_onnxruntime()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = ModelFolder.open(lealla_model(work))
    encoder = Encoder(folder, device="cpu", precision="int8", threads=args.threads)
    ids = np.array(make_inputs(encoder, TEXTS, LENGTH), np.int64)
    mask = np.ones_like(ids)
    shipped = onnx.load(str(folder.variant("int8")))
    sessions = {}
    for name, model in variants(shipped).items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.log_severity_level = 3
        sessions[name] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def embed(session) -> np.ndarray:
        feeds = ({"input_ids": ids[i:i + BATCH], "attention_mask": mask[i:i + BATCH]} for i in range(0, TEXTS, BATCH))
        return np.concatenate([session.run(None, feed)[0] for feed in feeds])

    reference = embed(sessions["shipped"])
    cosine = {name: float((embed(s) * reference).sum(axis=1).min()) for name, s in sessions.items()}
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            embed(session)
            rates[name].append(TEXTS / (time.perf_counter() - started))
    base = max(rates["shipped"])
    results = {"command": "python bench/bench_int8_layouts.py", "model": "LEALLA-small shape (random weights), int8",
               "texts": TEXTS, "tokens": LENGTH, "batch": BATCH, "threads": args.threads, "rounds": args.rounds,
               "onnxruntime": ort.__version__, "cpu_count": os.cpu_count(), "variants": {}}
    for name, measured in rates.items():
        entry = {"texts_per_s_best": round(max(measured), 1),
                 "texts_per_s_median": round(float(np.median(measured)), 1),
                 "over_shipped": round(max(measured) / base, 3), "cosine_to_shipped_min": round(cosine[name], 6)}
        results["variants"][name] = entry
        print(f"{name:20s} {entry['texts_per_s_best']:7.1f} texts/s (median {entry['texts_per_s_median']:7.1f})  "
              f"{entry['over_shipped']:.3f} x shipped  cosine {entry['cosine_to_shipped_min']:.6f}", flush=True)
    results["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
