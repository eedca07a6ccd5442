"""int8 routes against fp32: cross-lingual name retrieval, batch independence and speed.

    .venv/bin/python bench/bench_quantization.py [--sensitivity] [--out bench/results/quantization.json]

Every route quantises the same fp32 graph of the offline default model
(multilingual-e5-small) and is measured on:

- **labels R@1**: the sample KB's labels (examples/kb.jsonl, 401 entities in the nine
  Mewsli-9 languages ar de en es fa ja sr ta tr). For each of the 72 ordered language
  pairs, each entity's label in one language queries the 401 labels of the other
  (mention-string encoding, as label indexes use); a hit is the same entity's label
  ranked first. 28,872 queries. Calibration never sees these labels
  (examples/make_calibration.py leaves them out). "agree" is the share of queries whose
  top label is the same as fp32's.
- **dev R@1**: when the entity-linking dev sets are present (`--dev-sets`, default
  $MEL_EL_DEV or ../shared/data/el-dev, as for the linker benches; they are not redistributable and are read in
  place, never copied), each set's gold mention strings query all of the set's KB names
  (labels and aliases, every language); a hit is a top name of the gold QID. Micro-average
  over sets with at least 50 mentions. Skipped when the folder is absent.
- **batch**: the lowest cosine, over a few texts, between a text embedded alone and the
  same text in a mixed batch (1.0 = batch-independent).
- **texts/s**: 512 inputs of 64 tokens, batch 64, all cores, best of 3 runs (min-max
  spread printed).

Routes: `dynamic` (onnxruntime's quantize_dynamic, per-channel weights: the int8 variant
before static calibration), `static` (calibrated activation scales, no smoothing),
`shipped` (static with SmoothQuant smoothing: what `mel model export` writes),
`shipped-reduce-range` (7-bit weights), `qdq-standard` (onnxruntime's quantize_static,
QDQ format, on the unfused-attention graph). `--sensitivity` adds runs of `shipped` with
one kind of matrix (QKV, attention output, feed-forward in or out; all layers) kept in fp32.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import linker_data  # noqa: E402
from bench_encoder import make_inputs  # noqa: E402

from mel.artifacts import command_line, tool_versions, write_json  # noqa: E402
from mel.encoding import Encoder  # noqa: E402
from mel.exporters.bert_onnx import build_bert_graph, with_primitive_layer_norms  # noqa: E402
from mel.exporters.quantize import CalibrationSet, calibration_set, padded_batches, quantize_int8  # noqa: E402
from mel.model_cache import resolve_model  # noqa: E402
from mel.models import ModelFolder  # noqa: E402

KINDS = ("attention", "attn_out", "ffn_in", "ffn_out")  # node name prefixes of bert_onnx's fused layout


def kb_labels() -> tuple[list[str], list[str], list[str]]:
    """(texts in language-major order, languages, qids)."""
    rows = [json.loads(line) for line in (ROOT / "examples" / "kb.jsonl").read_text(encoding="utf-8").splitlines()]
    langs = sorted({r["lang"] for r in rows})
    qids = sorted({r["qid"] for r in rows})
    label = {(r["qid"], r["lang"]): r["label"] for r in rows}
    return [label[(q, lang)] for lang in langs for q in qids], langs, qids


def label_retrieval(vectors: np.ndarray, langs: list[str], qids: list[str]) -> tuple[float, np.ndarray]:
    """R@1 over all ordered language pairs, and each query's top candidate (for agreement)."""
    n = len(qids)
    per_lang = vectors.reshape(len(langs), n, -1)
    hits, tops = 0, []
    for a in range(len(langs)):
        for b in range(len(langs)):
            if a != b:
                top = (per_lang[a] @ per_lang[b].T).argmax(axis=1)
                hits += int((top == np.arange(n)).sum())
                tops.append(top)
    return hits / (n * len(langs) * (len(langs) - 1)), np.concatenate(tops)


def dev_sets(folder: Path) -> list[tuple[str, list[str], list[str], list[str], list[set[str]]]]:
    """(set, mention strings, gold qids, KB names, qids per name) for each dev set with 50+ findable mentions."""
    out = []
    for kb_path in sorted(folder.glob("*.kb.jsonl")):
        name = kb_path.name[: -len(".kb.jsonl")]
        names: dict[str, set[str]] = {}
        for line in kb_path.read_text(encoding="utf-8").splitlines():
            entity = json.loads(line)
            for text in [entity["label"], *entity.get("aliases", [])]:
                if text:
                    names.setdefault(text, set()).add(entity["qid"])
        known = set().union(*names.values()) if names else set()
        queries, gold = [], []
        for line in (folder / f"{name}.docs.jsonl").read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            for m in doc["mentions"]:
                if m.get("qid") in known:
                    queries.append(doc["text"][m["start"]:m["end"]])
                    gold.append(m["qid"])
        if len(queries) >= 50:
            out.append((name, queries, gold, list(names), list(names.values())))
    return out


class Route:
    """One quantised graph, measured through the real Encoder batching code."""

    def __init__(self, name: str, path: Path, reference: Encoder, threads: int):
        import onnxruntime as ort

        self.name, self.path = name, path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.encoder = Encoder(reference.model, device="cpu", precision="fp32", threads=threads, verify=False)
        self.encoder.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, strings: list[str]) -> np.ndarray:
        return self.encoder.encode_ids(self.encoder.tokens.strings(strings, "mention"))


def batch_independence(route: Route) -> float:
    texts = ["Paris", "Tokio es la capital de Japón.", "パリ", "Michael Jordan"]
    filler = ["The president of France met the German chancellor in Berlin on Monday to discuss energy prices.",
              "rome", "Влада у Београду представила је нови план."] * 10
    alone = route.embed(texts)
    worst = 1.0
    for i, text in enumerate(texts):
        mixed = route.embed(filler[:7] + [text] + filler[7:])[7]
        worst = min(worst, float(alone[i] @ mixed))
    return worst


def speed(route: Route, inputs: list[list[int]]) -> dict:
    route.encoder.encode_ids(inputs[:64])  # warm-up
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        route.encoder.encode_ids(inputs)
        rates.append(len(inputs) / (time.perf_counter() - started))
    return {"texts_per_s": round(max(rates), 1), "texts_per_s_min": round(min(rates), 1)}


def dynamic_route(fp32: Path, out: Path) -> None:
    """onnxruntime's dynamic quantisation, as the int8 variant was made before (per-channel weights)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(with_primitive_layer_norms(onnx.load(str(fp32))), str(out), weight_type=QuantType.QInt8,
                     per_channel=True, op_types_to_quantize=["MatMul", "Attention", "Gather"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def qdq_standard_route(folder: ModelFolder, calibration: CalibrationSet, out: Path) -> None:
    """onnxruntime's quantize_static (QDQ, per-channel, MinMax) on the unfused-attention graph."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from mel.exporters.default_model import default_weights
    from mel.exporters.model_folder import add_marker

    weights, tokenizer = default_weights()
    weights, _ = add_marker(weights, tokenizer)
    model = with_primitive_layer_norms(build_bert_graph(weights, folder.manifest.pooling, "standard"))
    source = out.with_name("standard.onnx")
    onnx.save_model(model, str(source))
    weight_names = {t.name for t in model.graph.initializer}
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weight_names]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([feeds for _, feeds in padded_batches(calibration.calibrate, calibration.pad_id)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=matmuls,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    source.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default="dynamic,static,shipped,shipped-reduce-range,qdq-standard")
    parser.add_argument("--sensitivity", action="store_true", help="`shipped` with one kind of matrix in fp32")
    parser.add_argument("--dev-sets", default=str(linker_data.EL_DEV))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--work", default="/tmp/mel-bench-quantization")
    parser.add_argument("--out", default=str(HERE / "results" / "quantization.json"))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # the quantisers' advice

    folder = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    reference = Encoder(folder, device="cpu", precision="fp32", threads=args.threads)
    manifest = folder.manifest
    calibration = calibration_set(reference.tokens.tokenizer, manifest.special_ids, manifest.prefixes,
                                  manifest.max_length)
    fp32 = folder.path / "model.onnx"
    labels, langs, qids = kb_labels()
    dev_root = Path(args.dev_sets)
    sets = dev_sets(dev_root) if dev_root.is_dir() else []
    if not sets:
        print(f"dev sets: {dev_root} not found, dev R@1 skipped", file=sys.stderr)
    inputs = make_inputs(reference, 512, 64)

    builders = {
        "dynamic": lambda out: dynamic_route(fp32, out),
        "static": lambda out: quantize_int8(fp32, out, calibration, alpha=None),
        "shipped": lambda out: quantize_int8(fp32, out, calibration),
        "shipped-reduce-range": lambda out: quantize_int8(fp32, out, calibration, reduce_range=True),
        "qdq-standard": lambda out: qdq_standard_route(folder, calibration, out),
    }
    plan = [(name, builders[name]) for name in args.routes.split(",") if name]
    if args.sensitivity:
        import onnx

        # The sensitivity pass: `shipped` with one kind of matrix (all layers) kept in fp32.
        names = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node
                 if n.op_type in ("MatMul", "Attention")]
        for kind in KINDS:
            nodes = [n for n in names if n.startswith(kind + "_")]
            plan.append((f"keep-fp32:{kind}", lambda out, keep=nodes: quantize_int8(fp32, out, calibration,
                                                                                    keep_fp32=keep)))

    results: dict = {"model": f"{manifest.source} (sha256 {manifest.checksum[:12]})", "threads": args.threads,
                     "cpu": platform.processor() or platform.machine(), "label_queries": len(qids) * 72,
                     "dev_sets": {name: len(q) for name, q, *_ in sets}, "routes": {}}
    ref_route = Route("fp32", fp32, reference, args.threads)
    ref_vectors = ref_route.embed(labels)
    ref_r1, ref_top = label_retrieval(ref_vectors, langs, qids)
    ref_dev = {name: ref_route.embed(q) for name, q, *_ in sets}
    ref_names = {name: ref_route.embed(n) for name, _, _, n, _ in sets}

    def measure(route: Route, vectors: np.ndarray) -> dict:
        r1, top = label_retrieval(vectors, langs, qids)
        row = {"labels_r1": round(100 * r1, 2),
               "labels_agree_with_fp32": round(100 * float((top == ref_top).mean()), 2),
               "cosine_to_fp32_mean": round(float((vectors * ref_vectors).sum(1).mean()), 5)}
        if sets:
            hits = total = 0
            for name, queries, gold, _names, name_qids in sets:
                q = ref_dev[name] if route.name == "fp32" else route.embed(queries)
                n = ref_names[name] if route.name == "fp32" else route.embed(_names)
                top_names = (q @ n.T).argmax(axis=1)
                hits += sum(g in name_qids[t] for g, t in zip(gold, top_names))
                total += len(gold)
            row["dev_r1"] = round(100 * hits / total, 2)
        row["batch_min_cosine"] = round(batch_independence(route), 7)
        row.update(speed(route, inputs))
        return row

    results["routes"]["fp32"] = measure(ref_route, ref_vectors)
    print(f"{'route':28s} {'labels R@1':>10s} {'agree':>6s} {'cos':>8s} {'dev R@1':>7s} {'batch':>9s} {'texts/s':>12s}")

    def show(name: str, row: dict) -> None:
        print(f"{name:28s} {row['labels_r1']:10.2f} {row['labels_agree_with_fp32']:6.2f} "
              f"{row['cosine_to_fp32_mean']:8.5f} {row.get('dev_r1', float('nan')):7.2f} "
              f"{row['batch_min_cosine']:9.6f} {row['texts_per_s']:6.1f} ({row['texts_per_s_min']:.0f}-)", flush=True)

    show("fp32", results["routes"]["fp32"])
    for name, build in plan:
        path = work / f"{name.replace(':', '-')}.onnx"
        started = time.perf_counter()
        build(path)
        route = Route(name, path, reference, args.threads)
        row = measure(route, route.embed(labels))
        row["build_s"] = round(time.perf_counter() - started, 1)
        row["labels_r1_lost"] = round(results["routes"]["fp32"]["labels_r1"] - row["labels_r1"], 2)
        if "dev_r1" in row:
            row["dev_r1_lost"] = round(results["routes"]["fp32"]["dev_r1"] - row["dev_r1"], 2)
        results["routes"][name] = row
        show(name, row)
        del route
        path.unlink(missing_ok=True)
    results["load_average"] = os.getloadavg()
    results["tools"] = tool_versions()
    results["command"] = command_line()
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
