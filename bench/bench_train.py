"""Benchmark of `mel train`: training steps/s and hard-negative mining throughput.

The model is LEALLA-small-shaped (24 layers, hidden 128, 8 heads, intermediate
512, pooler), randomly initialised; batches are b = 32 mentions with neg = 7
negatives each (288 windows of 64 tokens a step), built by the real batch code
(mel.training.batches) from in-memory round tables. The vocabulary is reduced
to --vocab rows (default 32,000; LEALLA's is 501,153, pass --vocab 501153 to
measure it: Adam then updates 64 M embedding weights a step).

Mining embeds mention windows with the model and samples negatives through the
index search API (k = 100, ScaNN over --kb-size random unit vectors, built with
mel's default settings); its throughput is mentions/s end to end, with the
embedding and the search + sampling parts also given alone.

    .venv/bin/python bench/bench_train.py
    .venv/bin/python bench/bench_train.py --device cuda --steps 50 --vocab 501153

Figures are printed and written to bench/results/train.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lealla_shape import lealla_small_weights  # noqa: E402

from mel.artifacts import command_line, tool_versions, write_json  # noqa: E402
from mel.indexes import Index, IndexSettings, IndexWriter  # noqa: E402
from mel.training.batches import RoundBatches  # noqa: E402
from mel.training.distributed import choose_device  # noqa: E402
from mel.training.kb_store import KBStore  # noqa: E402
from mel.training.loss import in_batch_loss  # noqa: E402
from mel.training.mining import MiningStats, NegativeMiner  # noqa: E402
from mel.training.round_data import RoundData  # noqa: E402
from mel.training.torch_model import autocast, embed_tokens, encoder_from_weights  # noqa: E402

LENGTH = 64
PAD = 0


def random_windows(rng: np.random.Generator, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(5, vocab, size=(n, LENGTH)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 2, 3
    return tokens, np.full(n, LENGTH, dtype=np.int16)


def bench_training(model, kb: KBStore, args, device) -> dict:
    rng = np.random.default_rng(1)
    n = args.batch_size * (args.steps + args.warmup)
    tokens, lengths = random_windows(rng, n, args.vocab)
    gold = rng.choice(kb.unique_qids, n)
    negatives = np.stack([rng.choice(kb.unique_qids, args.neg, replace=False) for _ in range(n)])
    data = RoundData(Path("."), tokens, lengths, gold, negatives, {})
    batches = RoundBatches(data, kb, batch_size=args.batch_size, seed=0, round_index=0, rank=0, pad_id=PAD,
                           device=device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.999))
    model.train()

    def step(number: int) -> float:
        batch = batches.batch(number)
        with autocast(device):
            vectors = model(batch.ids, batch.mask)
        loss, _ = in_batch_loss(vectors[: batch.mentions], vectors[batch.mentions:], 50.0, batch.gold_qids,
                                batch.column_qids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for number in range(args.warmup):
        step(number)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for number in range(args.warmup, args.warmup + args.steps):
        step(number)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"steps": args.steps, "seconds": round(seconds, 3), "steps_per_s": args.steps / seconds,
            "mentions_per_s": args.steps * args.batch_size / seconds,
            "windows_per_s": args.steps * args.batch_size * (args.neg + 2) / seconds}


def bench_mining(model, args, device, work: Path) -> dict:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((args.kb_size, 128)).astype(np.float32)
    qids = np.arange(1, args.kb_size + 1, dtype=np.int64)
    started = time.perf_counter()
    with IndexWriter(work / "index", 128, settings=IndexSettings()) as writer:
        for lo in range(0, args.kb_size, 65536):
            chunk = slice(lo, lo + 65536)
            writer.add(vectors[chunk], qids[chunk], "description", "es", [""] * len(qids[chunk]))
    build_seconds = time.perf_counter() - started
    index = Index(work / "index")
    tokens, lengths = random_windows(rng, args.mentions, args.vocab)
    gold = rng.choice(qids, args.mentions)
    miner = NegativeMiner(index, args.neg, args.k)
    embed_tokens(model, tokens[:64], lengths[:64], PAD, device, args.encode_batch_size)  # warm-up
    started = time.perf_counter()
    queries = embed_tokens(model, tokens, lengths, PAD, device, args.encode_batch_size)
    embedded = time.perf_counter()
    stats = MiningStats()
    miner.sample(queries, gold, np.random.default_rng(0), stats)
    finished = time.perf_counter()
    return {"kb_entries": args.kb_size, "algorithm": index.manifest.shards[0].search.algorithm,
            "index_build_seconds": round(build_seconds, 2), "mentions": args.mentions, "k": args.k,
            "mentions_per_s": args.mentions / (finished - started),
            "embedding_mentions_per_s": args.mentions / (embedded - started),
            "search_and_sample_mentions_per_s": args.mentions / (finished - embedded),
            "k_grown": stats.grown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--vocab", type=int, default=32_000, help="embedding rows (LEALLA: 501,153)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--neg", type=int, default=7)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--kb-size", type=int, default=100_000)
    parser.add_argument("--mentions", type=int, default=1024, help="mentions mined")
    parser.add_argument("--encode-batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    model = encoder_from_weights(lealla_small_weights(args.vocab), "pooler", dropout=0.1).to(device)
    kb_rng = np.random.default_rng(3)
    kb_tokens, kb_lengths = random_windows(kb_rng, 4096, args.vocab)
    kb_qids = np.arange(1, 4097, dtype=np.int64)
    kb = KBStore(Path("."), kb_tokens, kb_lengths, kb_qids, np.zeros(4096, np.uint16), ["es"], kb_qids,
                 np.arange(4096, dtype=np.int64), {})
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None  # other processes share the cores
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        training = bench_training(model, kb, args, device)
        mining = bench_mining(model, args, device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "model": "LEALLA-small shape (24 layers, hidden 128, 8 heads, intermediate 512), random init",
        "vocab": args.vocab, "vocab_reduced": args.vocab != 501_153, "batch_size": args.batch_size,
        "neg": args.neg, "tokens": LENGTH, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
        platform.machine(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "mixed_precision": device.type == "cuda",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "training": training, "mining": mining, "tools": tool_versions(), "command": command_line(),
    }
    print(f"device {result['device']} ({result['device_name']}), {result['torch_threads']} torch threads, "
          f"vocab {args.vocab:,}")
    print(f"training: {training['steps_per_s']:.3f} steps/s, {training['mentions_per_s']:.1f} mentions/s "
          f"(b={args.batch_size}, neg={args.neg}: {training['windows_per_s']:.0f} windows/s)")
    print(f"mining:   {mining['mentions_per_s']:.1f} mentions/s end to end (embedding "
          f"{mining['embedding_mentions_per_s']:.1f}/s, search + sampling "
          f"{mining['search_and_sample_mentions_per_s']:.0f}/s; {mining['algorithm']} over {args.kb_size:,})")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
