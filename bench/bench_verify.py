"""What checking an index at load costs: sha256 throughput, and opening an index with and without it.

    python bench/bench_verify.py [--entries 200000] [--dim 384] [--out bench/results/verify.json]

Measures (1) hashlib's sha256 over an in-memory buffer, (2) `Index(folder)` (every
file hashed, every vector checked for a finite unit row, in one read) against
`Index(folder, verify=False)` (`--no-verify`: sizes and table ranges only) on a
synthetic exact-search index whose files were just written, so both read from the
page cache: the difference is what verification adds per GB. From a cold disk the
reading itself dominates, and a search reads the files anyway.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mel.artifacts import command_line, folder_size, tool_versions  # noqa: E402
from mel.indexes import Index, IndexSettings, IndexWriter  # noqa: E402

GB = 1e9


def sha256_gb_per_s(megabytes: int = 512, repeats: int = 3) -> float:
    block = np.random.default_rng(0).integers(0, 256, size=megabytes << 20, dtype=np.uint8).tobytes()
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        hashlib.sha256(block).hexdigest()
        best = max(best, len(block) / (time.perf_counter() - started) / GB)
    return best


def build(folder: Path, entries: int, dim: int) -> None:
    rng = np.random.default_rng(1)
    settings = IndexSettings(shard_size=entries, scann=False)
    with IndexWriter(folder, dim, settings=settings, extra={"query_encoding": "context"}) as writer:
        for start in range(0, entries, 50_000):
            n = min(50_000, entries - start)
            writer.add(rng.standard_normal((n, dim), dtype=np.float32), np.arange(start + 1, start + n + 1),
                       "description", "en", [f"entity {i}" for i in range(start, start + n)])


def open_seconds(folder: Path, verify: bool, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        Index(folder, verify=verify)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--out", default="bench/results/verify.json")
    args = parser.parse_args()

    raw = sha256_gb_per_s()
    print(f"sha256 (hashlib, in memory): {raw:.2f} GB/s = {1 / raw:.2f} s per GB")
    with tempfile.TemporaryDirectory(prefix="mel-bench-verify.") as work:
        folder = Path(work) / "index"
        build(folder, args.entries, args.dim)
        size = folder_size(folder)
        Index(folder)  # once, so that both measurements read from the page cache
        checked, unchecked = open_seconds(folder, True), open_seconds(folder, False)
    added = (checked - unchecked) / (size / GB)
    print(f"index of {args.entries:,} x {args.dim} ({size / GB:.2f} GB): open {checked:.2f} s verified, "
          f"{unchecked:.3f} s with --no-verify; verification adds {added:.2f} s per GB")
    results = {
        "sha256_gb_per_s": raw, "sha256_s_per_gb": 1 / raw,
        "index": {"entries": args.entries, "dim": args.dim, "bytes": size, "search": "exact (no ScaNN files)"},
        "open_verified_s": checked, "open_no_verify_s": unchecked, "verify_s_per_gb": added,
        "cache": "warm (files just written)", "cpu": platform.machine(),
        "tool_versions": tool_versions(), "command": command_line(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
