"""Benchmark of the sharded ScaNN index on synthetic clustered unit vectors.

Measures build time, peak RSS during the build, and search throughput of
ScaNN against exact NumPy search at recall@10 >= the target (leaves_to_search
and the reorder depth are raised until the target is met).

    .venv/bin/python bench/bench_index.py                      # 1M x 384, one shard
    .venv/bin/python bench/bench_index.py --n 100000 --shard-size 50000

Figures are printed and written to bench/results/index.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mel.artifacts import command_line, tool_versions, write_json  # noqa: E402
from mel.indexes import Index, IndexSettings, IndexWriter  # noqa: E402


class PeakMemory:
    """Samples RSS, and its anonymous part (RSS minus file-backed pages), every 20 ms."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak_rss = 0
        self.peak_anonymous = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            memory = self.process.memory_info()
            self.peak_rss = max(self.peak_rss, memory.rss)
            self.peak_anonymous = max(self.peak_anonymous, memory.rss - memory.shared)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float) -> np.ndarray:
    """Points around random cluster centres, L2-normalised."""
    points = centers[rng.integers(0, len(centers), n)]
    points = points + spread * rng.standard_normal(points.shape, dtype=np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def timed_search(index: Index, queries: np.ndarray, k: int, **options):
    start = time.perf_counter()
    result = index.search(queries, k, **options)
    return result, time.perf_counter() - start


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(f, t).size / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="entries (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shard-size", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=None, help="noise per dimension (default 1/√dim)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--training-sample-size", type=int, default=IndexSettings.training_sample_size)
    parser.add_argument("--leaves-divisor", type=int, default=IndexSettings.leaves_to_search_divisor,
                        help="leaves searched by default = num_leaves / this")
    parser.add_argument("--batch", type=int, default=10_000, help="entries per add() call")
    parser.add_argument("--folder", type=Path, default=None, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built index")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index.json")
    args = parser.parse_args()

    spread = args.spread if args.spread is not None else 1 / np.sqrt(args.dim)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    workdir = Path(tempfile.mkdtemp(prefix="mel-bench-index."))
    folder = args.folder or workdir / "index"

    settings = IndexSettings(
        shard_size=args.shard_size,
        training_sample_size=args.training_sample_size,
        leaves_to_search_divisor=args.leaves_divisor,
    )
    baseline = psutil.Process().memory_info().rss
    print(f"building {args.n:,} x {args.dim} entries, shards of {args.shard_size:,} ...", file=sys.stderr)
    start = time.perf_counter()
    with PeakMemory() as memory:
        with IndexWriter(folder, args.dim, settings=settings, force=True, total=args.n) as writer:
            for first in range(0, args.n, args.batch):
                count = min(args.batch, args.n - first)
                vectors = clustered(np.random.default_rng(1 + first), centers, count, spread)
                qids = np.arange(first + 1, first + count + 1)
                writer.add(vectors, qids, "description", "xx", [f"e{i}" for i in range(first, first + count)])
    build_seconds = time.perf_counter() - start
    shard_vector_bytes = min(args.shard_size, args.n) * args.dim * 4
    peak_rss = memory.peak_rss - baseline
    print(f"built in {build_seconds:,.1f} s; peak RSS +{peak_rss / 2**20:,.0f} MiB", file=sys.stderr)

    queries = clustered(np.random.default_rng(10**9), centers, args.queries, spread)
    exact_index = Index(folder, exact=True)
    exact_index.search(queries[:10], args.k)  # page the vectors in
    truth, exact_seconds = timed_search(exact_index, queries, args.k)
    exact_seconds = min(exact_seconds, timed_search(exact_index, queries, args.k)[1])  # best of two
    exact_qps = args.queries / exact_seconds

    index = Index(folder)
    index.search(queries[:10], args.k)  # load the searchers
    shard = index.manifest.shards[0].search
    # The fastest setting that reaches the target: try fewer and more leaves
    # and reorder depths around the build's defaults.
    if shard.algorithm == "tree_ah":
        leaf_options = sorted({max(1, shard.num_leaves // d) for d in (80, 40, 20, 10, 5, 2, 1)})
    else:
        leaf_options = [None]
    reorder_options = [40, 100, 250] if shard.algorithm != "brute_force" else [None]
    trials = []
    for reorder in reorder_options:
        for leaves in leaf_options:
            found, seconds = timed_search(
                index, queries, args.k, leaves_to_search=leaves, pre_reorder_num_neighbors=reorder
            )
            trial = {
                "leaves_to_search": leaves,
                "pre_reorder_num_neighbors": reorder,
                "recall_at_10": recall(found.qids, truth.qids),
                "queries_per_second": args.queries / seconds,
            }
            trials.append(trial)
            print(f"  ScaNN {trial}", file=sys.stderr)
            if trial["recall_at_10"] >= max(0.995, args.target_recall):
                break  # more leaves only cost time
    passing = [t for t in trials if t["recall_at_10"] >= args.target_recall]
    chosen = max(passing, key=lambda t: t["queries_per_second"]) if passing else trials[-1]
    at_defaults = next(
        (
            t for t in trials
            if t["leaves_to_search"] == (shard.leaves_to_search or None)
            and t["pre_reorder_num_neighbors"] == (shard.reorder_num_neighbors or None)
        ),
        None,
    )  # fmt: skip

    results = {
        "command": command_line(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "tool_versions": tool_versions(),
        "n": args.n,
        "dim": args.dim,
        "shard_size": args.shard_size,
        "shards": len(index.manifest.shards),
        "shard_configs": [s.search.to_json() for s in index.manifest.shards],
        "clusters": args.clusters,
        "spread": spread,
        "build_seconds": build_seconds,
        "build_entries_per_second": args.n / build_seconds,
        "peak_rss_bytes": peak_rss,
        "peak_rss_anonymous_bytes": memory.peak_anonymous - baseline,
        "peak_rss_process_bytes": memory.peak_rss,
        "ru_maxrss_whole_run_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "shard_vector_bytes": shard_vector_bytes,
        "peak_rss_over_shard_vectors": peak_rss / shard_vector_bytes,
        "index_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        "queries": args.queries,
        "k": args.k,
        "exact_queries_per_second": exact_qps,
        "scann_trials": trials,
        "target_recall_at_10": args.target_recall,
        "chosen": chosen,
        "speedup_over_exact": chosen["queries_per_second"] / exact_qps,
        "at_default_settings": at_defaults,
        "speedup_over_exact_at_default_settings": at_defaults and at_defaults["queries_per_second"] / exact_qps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(
        f"build {build_seconds:,.1f} s ({args.n / build_seconds:,.0f} entries/s), "
        f"peak RSS +{peak_rss / 2**20:,.0f} MiB = {peak_rss / shard_vector_bytes:.2f}x one shard's vectors "
        f"(anonymous +{(memory.peak_anonymous - baseline) / 2**20:,.0f} MiB)\n"
        f"exact {exact_qps:,.0f} q/s; ScaNN {chosen['queries_per_second']:,.0f} q/s at recall@10 "
        f"{chosen['recall_at_10']:.3f} (leaves {chosen['leaves_to_search']}, reorder "
        f"{chosen['pre_reorder_num_neighbors']}) = {results['speedup_over_exact']:.1f}x\n"
        + (
            f"at the default settings: {at_defaults['queries_per_second']:,.0f} q/s, recall@10 "
            f"{at_defaults['recall_at_10']:.3f} = {results['speedup_over_exact_at_default_settings']:.1f}x\n"
            if at_defaults
            else ""
        )
        + f"written to {args.out}"
    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    elif args.folder is None:
        print(f"index kept at {folder}")


if __name__ == "__main__":
    main()
