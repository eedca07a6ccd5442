"""End-to-end `mel link` throughput and memory.

    python bench/bench_link.py [--mentions 20000,200000] [--entries 100000] [--out bench/results/link.json]

Builds (once, in --work) a synthetic index of `--entries` clustered unit vectors
recorded as made by the default model (so `mel link` accepts it; the index's
contents do not change the pipeline's cost), and synthetic multilingual
corpora of the given mention counts (64-token contexts). Each corpus is then
linked in a fresh process with the default model at int8 (`--method biencoder`:
the index is single-view, the pipeline is `mel link`'s); the
figures are mentions/s, the share of wall time each stage was busy
(read+tokenise, encode, search, write; the stages overlap), and the process's
peak RSS, which should stay flat as the corpus grows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_encoder import SENTENCES  # noqa: E402


def make_corpus(path: Path, mentions: int, seed: int = 0) -> None:
    """Documents of ~10 mentions each, built from multilingual sentences."""
    rng = random.Random(seed)
    written = 0
    with open(path, "wb") as out:
        doc = 0
        while written < mentions:
            text = " ".join(rng.choice(SENTENCES) for _ in range(12))
            words = [(i, i + len(w)) for i, w in _words(text) if len(w) > 3]
            spans = sorted(rng.sample(words, min(10, len(words), mentions - written)))
            record = {"id": f"d{doc}", "lang": "xx", "text": text,
                      "mentions": [{"start": s, "end": e} for s, e in spans]}
            out.write(orjson.dumps(record) + b"\n")
            written += len(spans)
            doc += 1


def _words(text: str):
    start = None
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start is not None:
                yield start, text[start:i]
                start = None
        elif start is None:
            start = i


def make_index(folder: Path, entries: int, model_dir: Path) -> None:
    from mel.encoding import Encoder
    from mel.indexes.builder import EntryBatch, build_index
    from mel.indexing import model_record
    from mel.models import ModelFolder

    encoder = Encoder(ModelFolder.open(model_dir))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, encoder.dim)).astype(np.float32)

    def batches(start: int):
        for lo in range(start, entries, 10_000):
            n = min(10_000, entries - lo)
            vectors = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, encoder.dim))
            qids = np.arange(lo, lo + n) // 2 + 1  # two entries per QID
            yield EntryBatch(vectors.astype(np.float32), qids, "description", "en", [""] * n)

    build_index(folder, batches, dim=encoder.dim, extra={"model": model_record(encoder),
                                                         "query_encoding": "context"})


def run_one(corpus: str, index: str, out: str, device: str = "cpu", precision: str = "int8",
            batch_size: int = 64, method: str = "biencoder") -> None:
    """Child process: link `corpus`, print stats and peak RSS as JSON."""
    import mel

    started = time.perf_counter()
    # The pipeline's stages (encode, search) on the synthetic one-view index: the bi-encoder, as
    # bench/results/link.json was measured; the fused linker's own cost is in bench_linker.py
    # (bench/gpu_check.py runs it here on a label index: method "linker").
    linker = mel.Linker.open(index, precision=precision, device=device, batch_size=batch_size, method=method)
    opened = time.perf_counter()
    stats = linker.link_files(corpus, out)
    wall = time.perf_counter() - opened
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mentions": stats.mentions, "documents": stats.documents, "wall_s": wall,
                      "open_s": opened - started, "mentions_per_s": stats.mentions / wall,
                      "stage_seconds": stats.stage_seconds,
                      "stage_share": {k: v / wall for k, v in stats.stage_seconds.items()},
                      "peak_rss_mib": peak / 2**20}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", default="20000,200000")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/mel-bench-link")
    parser.add_argument("--out", default="bench/results/link.json")
    parser.add_argument("--run", nargs="+", metavar="CORPUS INDEX OUT [DEVICE PRECISION BATCH [METHOD]]",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        corpus, index, out, *encoder = args.run
        run_one(corpus, index, out, *encoder[:2], *[int(b) for b in encoder[2:3]], *encoder[3:4])
        return 0

    from mel.model_cache import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    index = work / f"index-{args.entries}"
    if not index.exists():
        started = time.perf_counter()
        make_index(index, args.entries, model.path)
        print(f"built a {args.entries:,}-entry index in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    results = {"entries": args.entries, "precision": "int8",
               "model": f"{model.manifest.source} (sha256 {model.manifest.checksum[:12]})",
               "threads": len(os.sched_getaffinity(0)), "runs": []}
    for size in [int(s) for s in args.mentions.split(",")]:
        corpus = work / f"corpus-{size}.jsonl"
        if not corpus.exists():
            make_corpus(corpus, size)
        done = subprocess.run([sys.executable, __file__, "--run", str(corpus), str(index),
                               str(work / f"linked-{size}.jsonl")], capture_output=True, text=True, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        results["runs"].append(run)
        shares = ", ".join(f"{k} {v:.1%}" for k, v in run["stage_share"].items())
        print(f"{size:>8,} mentions: {run['mentions_per_s']:,.1f} mentions/s, wall {run['wall_s']:.0f}s, "
              f"peak RSS {run['peak_rss_mib']:.0f} MiB; busy: {shares}")
    if len(results["runs"]) > 1:
        rss = [r["peak_rss_mib"] for r in results["runs"]]
        results["rss_growth"] = rss[-1] / rss[0] - 1
        print(f"peak RSS change from smallest to largest corpus: {results['rss_growth']:+.1%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from mel.artifacts import command_line

    results["command"] = command_line()
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
