"""`mel link` on one process vs `--engine ray` with 1 and 2 workers: throughput, start-up, memory.

    python bench/bench_ray_link.py [--mentions 8000] [--entries 20000] [--repeats 2] [--out bench/results/ray_link.json]

Uses bench_link's synthetic index (clustered vectors recorded as the default model's, queried
in context) and multilingual corpus; every run is a fresh `mel` process (default model, int8,
CPU). Figures:
- mentions/s end to end (wall time of the command), and after start-up (wall minus the start-up
  time, measured as the wall time of the same command on a 10-document corpus);
- the ratio of each engine run to plain `mel link` (the engine's overhead at one worker);
- peak RSS: of the `mel` process (plain), and of each Ray Linker actor (sampled every 0.2 s).
Plain and 1-worker runs use 2 encoder threads (this machine's cores); 2 workers use 1 each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_link import make_corpus, make_index  # noqa: E402

ACTOR = "MapWorker(MapBatches(LinkActor))"


def run(command: list[str]) -> dict:
    """Wall time and peak RSS of the command, and the peak RSS of each Ray Linker actor it starts."""
    import psutil

    peaks: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmdline = proc.info["cmdline"] or []
                if any(ACTOR in part for part in cmdline) and proc.info["memory_info"]:
                    peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.info["memory_info"].rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
            "actor_peak_rss_mib": sorted(v / 2**20 for v in peaks.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", type=int, default=8000)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mel-bench-ray-link"))
    parser.add_argument("--out", default="bench/results/ray_link.json")
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

    from mel.model_cache import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    index = work / f"index-{args.entries}"
    if not index.exists():
        make_index(index, args.entries, model.path)
    corpus, tiny = work / f"corpus-{args.mentions}.jsonl", work / "corpus-tiny.jsonl"
    if not corpus.exists():
        make_corpus(corpus, args.mentions)
    if not tiny.exists():
        make_corpus(tiny, 100)
    documents = sum(1 for _ in corpus.open())
    # --method biencoder on bench_link's one-view index, as bench/results/ray_link.json was measured: the
    # engine's overhead, not the ranker's (the fused linker's own cost is in bench_linker.py).
    mel = [sys.executable, "-m", "mel", "link", "--index", str(index), "--method", "biencoder", "--precision", "int8",
           "--device", "cpu", "-q"]
    setups = {
        "plain": ["--threads", "2"],
        "ray, 1 worker": ["--engine", "ray", "--workers", "1", "--cpus-per-worker", "2", "--force",
                          "--task-docs", str(max(1, documents // 8))],
        "ray, 2 workers": ["--engine", "ray", "--workers", "2", "--cpus-per-worker", "1", "--force",
                           "--task-docs", str(max(1, documents // 8))],
    }
    results = {"mentions": args.mentions, "documents": documents, "entries": args.entries, "precision": "int8",
               "cpus": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()[0], "runs": {}}
    for name, extra in setups.items():
        out = ["-o", str(work / ("out.jsonl" if name == "plain" else "run"))]
        startup = [run([*mel, str(tiny), *extra, *out])["wall_s"] for _ in range(args.repeats)]
        full = [run([*mel, str(corpus), *extra, *out]) for _ in range(args.repeats)]
        walls = [r["wall_s"] for r in full]
        start = statistics.median(startup)
        figures = {
            "startup_s": startup, "wall_s": walls,
            "mentions_per_s": [args.mentions / w for w in walls],
            "mentions_per_s_after_startup": [args.mentions / max(1e-9, w - start) for w in walls],
            "peak_rss_mib": [r["peak_rss_mib"] for r in full],
            "actor_peak_rss_mib": [r["actor_peak_rss_mib"] for r in full],
        }
        results["runs"][name] = figures
        rate = figures["mentions_per_s"]
        print(f"{name:>15}: {min(rate):,.1f}-{max(rate):,.1f} mentions/s end to end "
              f"({min(figures['mentions_per_s_after_startup']):,.1f}-"
              f"{max(figures['mentions_per_s_after_startup']):,.1f} after start-up); start-up "
              f"{min(startup):.1f}-{max(startup):.1f} s; peak RSS {max(figures['peak_rss_mib']):,.0f} MiB"
              + (f", per actor {max(max(a, default=0) for a in figures['actor_peak_rss_mib']):,.0f} MiB"
                 if name != "plain" else ""))
    plain = statistics.median(results["runs"]["plain"]["mentions_per_s"])
    plain_steady = statistics.median(results["runs"]["plain"]["mentions_per_s_after_startup"])
    results["ratios"] = {name: {"end_to_end": statistics.median(r["mentions_per_s"]) / plain,
                                "after_startup": statistics.median(r["mentions_per_s_after_startup"]) / plain_steady}
                         for name, r in results["runs"].items()}
    for name, ratio in results["ratios"].items():
        print(f"{name:>15}: {ratio['end_to_end']:.2f} x plain end to end, "
              f"{ratio['after_startup']:.2f} x after start-up")
    results["load_after"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from mel.artifacts import command_line

    results["command"] = command_line()
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(json.dumps({"load_before": results["load_before"], "load_after": results["load_after"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
