"""Which variant `--precision auto` runs, decided per model when it is exported.

Each derived variant is compared with fp32 on the held-out calibration texts, and
on CPU the exporter times fp32 and int8 on one batch of full-length inputs. auto
then means, for this model: on CPU the faster of the two whose embeddings meet the
accuracy bar (int8 only when it is not clearly slower than fp32: the timing is a
quick one, so near-ties stay int8, which also loads less), and on CUDA fp16 when it
meets its bar, else fp32. The figures go into the manifest (`mel model info`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mel.exporters.quantize import CalibrationSet, cpu_session, embed, padded_batches

# Mean cosine to fp32 on the held-out calibration texts that a variant must reach.
# For int8 on the default model, 0.9990 went with 0.26 points of cross-lingual R@1
# lost and onnxruntime's dynamic int8 (0.997) with 1.0 (bench/bench_quantization.py).
MIN_COSINE = {"int8": 0.998, "fp16": 0.999}
# int8 is kept unless fp32 measures this much faster (a quick timing is noisy).
INT8_SLOWER_TOLERANCE = 0.85
_TIMED_TEXTS = 32


def compare_to_fp32(fp32_path: str | Path, variant_path: str | Path, calibration: CalibrationSet) -> dict:
    """Cosine of a variant's embeddings to fp32's on the held-out calibration texts."""
    reference = embed(cpu_session(fp32_path), calibration.check, calibration.pad_id)
    got = embed(cpu_session(variant_path), calibration.check, calibration.pad_id)
    cosine = (reference * got).sum(axis=1)
    return {"cosine_to_fp32_mean": round(float(cosine.mean()), 6), "cosine_to_fp32_min": round(float(cosine.min()), 6),
            "check_texts": len(calibration.check)}


def full_length_inputs(calibration: CalibrationSet, length: int, count: int = _TIMED_TEXTS) -> list[list[int]]:
    """`count` inputs of exactly `length` tokens, cut from the calibration texts' tokens."""
    stream = [token for seq in calibration.calibrate for token in seq[1:-1]]
    start, end = calibration.calibrate[0][0], calibration.calibrate[0][-1]
    if len(stream) <= length:
        stream = stream * (length // max(1, len(stream)) + 2)
    step = max(1, (len(stream) - length) // count)
    return [[start, *stream[i * step:i * step + length - 2], end] for i in range(count)]


def texts_per_second(paths: list[str | Path], inputs: list[list[int]], pad_id: int, runs: int = 3) -> list[float]:
    """texts/s of each graph over `inputs` (one batch), on CPU with all cores: the best of
    `runs` after a warm-up, the graphs' runs interleaved so that other load hits them alike."""
    sessions = [cpu_session(path) for path in paths]
    (_, feeds), = padded_batches(inputs, pad_id, batch_size=len(inputs))
    best = [np.inf] * len(sessions)
    for round_ in range(runs + 1):
        for i, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, feeds)
            if round_:  # round 0 warms up
                best[i] = min(best[i], time.perf_counter() - started)
    return [round(len(inputs) / seconds, 1) for seconds in best]


def choose_auto(folder: Path, files: dict[str, str], variants: dict[str, dict], calibration: CalibrationSet | None,
                max_length: int) -> dict[str, str]:
    """{"cpu": variant, "cuda": variant} for this model; adds the timings to `variants` (in place)."""
    meets = {name: report.get("cosine_to_fp32_mean", 0.0) >= MIN_COSINE[name] for name, report in variants.items()}
    choice = {"cpu": "fp32", "cuda": "fp16" if meets.get("fp16") else "fp32"}
    if "int8" in variants and calibration is not None:
        inputs = full_length_inputs(calibration, max_length)
        fp32_rate, int8_rate = texts_per_second([folder / files["fp32"], folder / files["int8"]], inputs,
                                                calibration.pad_id)
        variants["int8"]["cpu_texts_per_s"] = int8_rate
        variants["int8"]["fp32_cpu_texts_per_s"] = fp32_rate
        if meets["int8"] and int8_rate >= INT8_SLOWER_TOLERANCE * fp32_rate:
            choice["cpu"] = "int8"
    return choice
