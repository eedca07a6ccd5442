"""The int8 variant: static, calibrated quantisation that does not depend on the batch.

onnxruntime's dynamic quantisation scales each MatMul input by the range of the
whole batch it sees, so a text's embedding changed with whatever shared its batch
(cosine 0.994-0.997 to itself), and it lost about a point of cross-lingual R@1.
This variant fixes every activation scale at export instead:

1. Calibrate: run the fp32 graph on the shipped calibration texts
   (data/calibration.jsonl, made by examples/make_calibration.py) and record the
   per-channel range of every MatMul/Attention input.
2. Smooth (SmoothQuant, Xiao et al. 2023): BERT's feed-forward inputs have a few
   channels 10-40x larger than the rest, and one per-tensor int8 scale then leaves
   the others a handful of levels. Such an input is divided per channel by s (a
   Mul node) and the weight rows multiplied by s, which is exact in fp32 and moves
   the outliers into the per-channel weight scales.
3. Quantise weights per channel to int8 with onnxruntime's `quantize_dynamic` (also
   QAttention for the fused attention, and the embedding table), then freeze: every
   DynamicQuantizeLinear becomes a QuantizeLinear with the calibrated scale and zero
   point, and each MatMulInteger/Cast/Mul(/bias Add) chain one MatMulIntegerToFloat.

Every operator then maps one row to one row with fixed constants, so a text's
embedding is the same alone or in any batch. Figures: README, "Performance", and
bench/bench_quantization.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import helper, numpy_helper
from tokenizers import Tokenizer

from mel.errors import ModelError
from mel.exporters.bert_onnx import INPUT_NAMES, OUTPUT_NAME, with_primitive_layer_norms
from mel.runtime import load_onnxruntime

CALIBRATION_FILE = "calibration.jsonl"
CALIBRATION_SHA256 = "9427ddc0e6d242f87d113bb115e885723dd4e558b6326ea915ef6a85157a7b2f"
# Every CHECK_EVERY-th calibration text is held out: the int8-to-fp32 check runs on those.
CHECK_EVERY = 5
# SmoothQuant's migration strength, and the channel spread (largest / median range)
# from which an input is smoothed. Chosen on the default model (bench/bench_quantization.py).
SMOOTHING_ALPHA = 0.85
OUTLIER_RATIO = 4.0
_BATCH = 16
_QUANTISED_OPS = ("MatMul", "Attention")


@dataclass(frozen=True)
class CalibrationSet:
    calibrate: list[list[int]]
    check: list[list[int]]
    pad_id: int


def calibration_texts() -> list[dict]:
    """The shipped calibration texts ({"role", "text"}), checked against their sha256."""
    try:
        raw = resources.files("mel.exporters").joinpath("data", CALIBRATION_FILE).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"mel/exporters/data/{CALIBRATION_FILE}: missing; reinstall mel") from None
    if hashlib.sha256(raw).hexdigest() != CALIBRATION_SHA256:
        raise ModelError(f"mel/exporters/data/{CALIBRATION_FILE}: checksum mismatch (damaged install); reinstall mel")
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def calibration_set(tokenizer: Tokenizer, special_ids: dict, prefixes: dict, max_length: int) -> CalibrationSet:
    """The calibration texts as model inputs: `<s> prefix text </s>`, cut to `max_length` tokens."""
    texts = calibration_texts()
    prefix_ids = {role: tokenizer.encode(p, add_special_tokens=False).ids if p else [] for role, p in prefixes.items()}
    encoded = tokenizer.encode_batch([t["text"] for t in texts], add_special_tokens=False)
    sequences = []
    for text, tokens in zip(texts, encoded):
        prefix = prefix_ids.get(text["role"], [])
        room = max_length - 2 - len(prefix)
        sequences.append([special_ids["start"], *prefix, *tokens.ids[:room], special_ids["end"]])
    check = set(range(CHECK_EVERY - 1, len(sequences), CHECK_EVERY))
    return CalibrationSet(calibrate=[s for i, s in enumerate(sequences) if i not in check],
                          check=[sequences[i] for i in sorted(check)], pad_id=special_ids["pad"])


def padded_batches(sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = _BATCH
                   ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(rows, feeds) per batch of similar-length sequences; rows index `sequences`.

    The same batching as mel.encoding's Encoder, which the exporters sit below."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for lo in range(0, len(order), batch_size):
        rows = order[lo:lo + batch_size]
        width = max(len(sequences[i]) for i in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, :len(sequences[i])] = sequences[i]
            mask[r, :len(sequences[i])] = 1
        yield rows, {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask}


def cpu_session(model: onnx.ModelProto | str | Path, threads: int | None = None):
    ort = load_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def embed(session, sequences: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    out = None
    for rows, feeds in padded_batches(sequences, pad_id):
        vectors = session.run([OUTPUT_NAME], feeds)[0]
        if out is None:
            out = np.empty((len(sequences), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
    return out if out is not None else np.empty((0, 0), np.float32)


def _targets(model: onnx.ModelProto, keep_fp32: Sequence[str]) -> dict[str, list[onnx.NodeProto]]:
    """Activation tensor -> the MatMul/Attention nodes that multiply it by a constant weight."""
    weights = {t.name for t in model.graph.initializer}
    targets: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type in _QUANTISED_OPS and node.input[1] in weights and node.name not in keep_fp32:
            targets.setdefault(node.input[0], []).append(node)
    return targets


def channel_ranges(model: onnx.ModelProto, tensors: Sequence[str], calibration: CalibrationSet
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) of each tensor over the calibration texts' real (unpadded) tokens."""
    # The tensors become extra graph outputs for this session only (a copy of a large graph costs its size).
    outputs = len(model.graph.output)
    for name in tensors:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    try:
        session = cpu_session(model)
    finally:
        del model.graph.output[outputs:]
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for _, feeds in padded_batches(calibration.calibrate, calibration.pad_id):
        real = feeds[INPUT_NAMES[1]].reshape(-1).astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), feeds)):
            rows = value.reshape(-1, value.shape[-1])
            rows = rows[real] if len(rows) == len(real) else rows  # pooled tensors have one row a text
            low, high = rows.min(axis=0), rows.max(axis=0)
            lows[name] = np.minimum(lows[name], low) if name in lows else low
            highs[name] = np.maximum(highs[name], high) if name in highs else high
    return {name: (lows[name], highs[name]) for name in tensors}


def _smooth(model: onnx.ModelProto, targets: dict[str, list[onnx.NodeProto]],
            ranges: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float) -> dict[str, tuple[str, np.ndarray]]:
    """Divide outlier inputs by s per channel and scale their weights' rows by s, in place.

    Returns {activation: (smoothed tensor name, s)} for the inputs it smoothed.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    smoothed: dict[str, tuple[str, np.ndarray]] = {}
    for tensor, nodes in targets.items():
        low, high = ranges[tensor]
        spread = np.maximum(np.abs(low), np.abs(high)) + 1e-6
        if spread.max() < OUTLIER_RATIO * np.median(spread):
            continue
        matrices = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        if any(m.ndim != 2 or m.shape[0] != spread.shape[0] for m in matrices):
            continue
        weight_spread = np.max([np.abs(m).max(axis=1) for m in matrices], axis=0) + 1e-6
        scale = spread ** alpha / weight_spread ** (1 - alpha)
        scale = np.maximum(scale / np.median(scale), 1.0).astype(np.float32)  # shrink outlier channels only
        name = f"{tensor}_smoothed"
        inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{tensor}_smoothing")
        model.graph.initializer.append(inverse)
        for node, matrix in zip(nodes, matrices):
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((matrix * scale[:, None]).astype(np.float32), node.input[1]))
            node.input[0] = name
        names = {n.name for n in nodes}
        position = next(i for i, n in enumerate(model.graph.node) if n.name in names)
        model.graph.node.insert(position, helper.make_node("Mul", [tensor, inverse.name], [name],
                                                           name=f"{tensor}_smooth"))
        smoothed[tensor] = (name, scale)
    return smoothed


def _uint8_scale(low: float, high: float) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point of [low, high] widened to hold 0 (as DynamicQuantizeLinear does)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 or 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def _freeze(model: onnx.ModelProto, tensor_ranges: dict[str, tuple[float, float]]) -> None:
    """DynamicQuantizeLinear -> QuantizeLinear with calibrated constants; MatMulInteger chains fused."""
    graph = model.graph
    nodes = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        if node.input[0] not in tensor_ranges:
            raise ModelError(f"int8 export: no calibrated range for '{node.input[0]}' (unexpected graph)")
        scale, zero = _uint8_scale(*tensor_ranges[node.input[0]])
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), node.output[1]),
                                  numpy_helper.from_array(np.array(zero, np.uint8), node.output[2])])
        nodes.append(helper.make_node("QuantizeLinear", [node.input[0], node.output[1], node.output[2]],
                                      [node.output[0]], name=f"{node.name}_static"))
    fused = _fuse_integer_matmuls(nodes, {t.name: t for t in graph.initializer})
    del graph.node[:]
    graph.node.extend(fused)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _fuse_integer_matmuls(nodes: list[onnx.NodeProto], initializers: dict) -> list[onnx.NodeProto]:
    """MatMulInteger -> Cast -> Mul(a_scale x b_scale) [-> Add(bias)] as one MatMulIntegerToFloat.

    onnxruntime fuses this itself only while the scale product is a node; with constant
    scales it is folded first and the chain runs as three kernels (about 8% slower).
    A chain that does not look as expected is left as it is (correct, only slower).
    """
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def only_consumer(name: str, op_type: str) -> onnx.NodeProto | None:
        found = consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for node in nodes:
        if node.op_type != "MatMulInteger" or len(node.input) < 4:
            continue
        cast = only_consumer(node.output[0], "Cast")
        mul = only_consumer(cast.output[0], "Mul") if cast is not None else None
        if cast is None or mul is None:
            continue
        product = producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
        if product is None or product.op_type != "Mul" or len(consumers.get(product.output[0], [])) != 1:
            continue
        output, bias, chain = mul.output[0], "", [cast, mul, product]
        add = only_consumer(output, "Add")
        if add is not None:
            other = next(i for i in add.input if i != output)
            if other in initializers and len(initializers[other].dims) == 1:
                output, bias = add.output[0], other
                chain.append(add)
        replaced[id(node)] = helper.make_node(
            "MatMulIntegerToFloat", [node.input[0], node.input[1], product.input[0], product.input[1],
                                     node.input[2], node.input[3], bias],
            [output], name=f"{node.name}_to_float", domain="com.microsoft")
        dropped.update(id(n) for n in chain)
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


def quantize_int8(fp32_path: str | Path, out: str | Path, calibration: CalibrationSet, *,
                  alpha: float | None = SMOOTHING_ALPHA, keep_fp32: Sequence[str] = (),
                  reduce_range: bool = False) -> dict:
    """Write the static int8 variant of the fp32 graph at `fp32_path` to `out`; returns what the manifest records.

    The options are for bench/bench_quantization.py, which measures the alternatives:
    `alpha` None turns smoothing off, `keep_fp32` names MatMul/Attention nodes to leave in
    float, `reduce_range` quantises weights to 7 bits.
    """
    load_onnxruntime()  # one clear error when no runtime is installed
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # int8 runs on CPU only, where layer norms are faster as plain arithmetic.
    model = with_primitive_layer_norms(onnx.load(str(fp32_path)))
    targets = _targets(model, keep_fp32)
    ranges = channel_ranges(model, list(targets), calibration)
    smoothed = _smooth(model, targets, ranges, alpha) if alpha is not None else {}
    tensor_ranges = {}
    for tensor, (low, high) in ranges.items():
        name, scale = smoothed.get(tensor, (tensor, np.ones_like(low)))
        tensor_ranges[name] = (float((low / scale).min()), float((high / scale).max()))
    weights = {t.name for t in model.graph.initializer}
    chosen = [n.name for nodes in targets.values() for n in nodes]
    chosen += [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in weights]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing
    try:
        # Per-channel signed weights; the embedding table (Gather) too: 406 -> 119 MB for the default model.
        quantized = quantize_dynamic(model, str(out), weight_type=QuantType.QInt8, per_channel=True,
                                     reduce_range=reduce_range,
                                     op_types_to_quantize=["MatMul", "Attention", "Gather"], nodes_to_quantize=chosen,
                                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    del quantized
    frozen = onnx.load(str(out))
    _freeze(frozen, tensor_ranges)
    onnx.save_model(frozen, str(out))
    return {"method": "static", "weights": "int8 per channel", "activations": "uint8 per tensor, calibrated (min-max)",
            "smoothing_alpha": alpha, "smoothed_inputs": len(smoothed), "reduce_range": reduce_range,
            "quantized_matmuls": len(chosen),
            "kept_fp32": sorted(keep_fp32), "calibration": {"file": CALIBRATION_FILE, "sha256": CALIBRATION_SHA256,
                                                            "texts": len(calibration.calibrate)}}
