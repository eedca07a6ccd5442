"""`torchrun --nproc-per-node 2 --no-python mel train …` on CPU (gloo): two ranks mine and train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from mel.encoding import Encoder
from mel.models import ModelFolder

pytestmark = pytest.mark.slow

MEL = Path(sys.executable).parent / "mel"


@pytest.mark.skipif(not MEL.is_file(), reason="the mel console script is not installed next to this Python")
def test_two_cpu_processes_train_a_valid_model(synthetic, small_checkpoint, tmp_path):
    kb, links, held_out = synthetic
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
        str(MEL), "train", "--kb", str(kb), "--links", str(links), "--model", str(small_checkpoint), "-o", str(run),
        "--rounds", "2", "--batch-size", "4", "--neg", "3", "--k", "8", "--steps-first", "6", "--steps", "6",
        "--lr", "3e-3", "--pooling", "mean", "--eval", f"jsonl:{held_out}", "--threads", "1",
        "--checkpoint-every", "4", "--log-every", "2", "--precision", "int8", "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model = ModelFolder.open(run / "model")
    assert model.manifest.precisions == ("fp32", "int8")
    vectors = Encoder(model).encode_texts(["paris city", "the king"])
    assert vectors.shape == (2, 32) and abs(float((vectors * vectors).sum(axis=1).min()) - 1) < 1e-4
    log = [orjson.loads(line) for line in (run / "train-log.jsonl").read_bytes().splitlines()]
    start = next(r for r in log if r["event"] == "start")
    assert start["world_size"] == 2
    rounds = [r for r in log if r["event"] == "round"]
    # Each round: 6 steps × 4 mentions on each of 2 ranks, mined by both.
    assert [r["mentions"] for r in rounds] == [48, 48] and [r["global_step"] for r in rounds] == [6, 12]
    assert all(r["eval"]["mentions"] == 96 for r in rounds)
    assert (run / "checkpoint" / "trainer" / "rng.safetensors").is_file()
    assert "Training rounds" in done.stdout and done.stdout.count("Training rounds") == 1  # rank 0 prints
