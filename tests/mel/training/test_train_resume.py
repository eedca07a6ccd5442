"""--resume after an interruption ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from mel.errors import InputError
from mel.exporters.checkpoints import load_checkpoint
from mel.models import ModelFolder
from mel.training.loop import train
from tests.mel.training.train_helpers import fast_settings

pytestmark = pytest.mark.slow


class Interrupt(KeyboardInterrupt):
    pass


def stop_at(global_step):
    def hook(round_index, step, at):
        if at == global_step:
            raise Interrupt(f"stopped at step {at}")
    return hook


def steps_log(run):
    records = [orjson.loads(line) for line in (run / "train-log.jsonl").read_bytes().splitlines()]
    return [(r["event"], r.get("round"), r.get("global_step"), r.get("loss"),
             r.get("R@1", (r.get("eval") or {}).get("R@1")))
            for r in records if r["event"] in ("steps", "round", "eval", "mining")]


def test_resume_reproduces_the_uninterrupted_run(synthetic, small_checkpoint, tmp_path):
    kb, links, held_out = synthetic
    options = dict(dropout=0.1, seed=7, eval=f"jsonl:{held_out}")  # dropout: the RNG state must be restored too
    whole = train(fast_settings(kb, links, small_checkpoint, tmp_path / "whole", **options))

    run = tmp_path / "cut"
    with pytest.raises(Interrupt):  # at the end of round 1's training, before its index and evaluation
        train(fast_settings(kb, links, small_checkpoint, run, **options), on_step=stop_at(12))
    with pytest.raises(Interrupt):  # mid-round 2, three steps after its last checkpoint (step 17)
        train(fast_settings(kb, links, small_checkpoint, run, resume=True, **options), on_step=stop_at(20))
    cut = train(fast_settings(kb, links, small_checkpoint, run, resume=True, **options))

    expected, got = load_checkpoint(whole.checkpoint), load_checkpoint(cut.checkpoint)
    assert all(np.array_equal(expected.arrays[name], got.arrays[name]) for name in expected.arrays)
    assert ModelFolder.open(cut.model).manifest.checksum == ModelFolder.open(whole.model).manifest.checksum
    strip = [{k: v for k, v in record.items() if k != "seconds"} for record in whole.history]
    assert [{k: v for k, v in record.items() if k != "seconds"} for record in cut.history] == strip
    assert steps_log(run) == steps_log(tmp_path / "whole")  # no record lost or repeated


def test_resume_refuses_other_options(synthetic, small_checkpoint, tmp_path):
    kb, links, _ = synthetic
    with pytest.raises(Interrupt):
        train(fast_settings(kb, links, small_checkpoint, tmp_path / "run", rounds=1), on_step=stop_at(6))
    with pytest.raises(InputError, match="batch_size"):
        train(fast_settings(kb, links, small_checkpoint, tmp_path / "run", rounds=1, batch_size=4, resume=True))
    with pytest.raises(InputError, match="already exists"):
        train(fast_settings(kb, links, small_checkpoint, tmp_path / "run", rounds=1))
