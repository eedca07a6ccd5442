"""The run's log (JSON Lines).

`train-log.jsonl` gets one record per event, each with `event` and
`global_step`: "start", "steps" (mean loss over the last `--log-every` steps,
learning rate, speed), "mining", "eval" and "round". A resumed run first
drops the records past its checkpoint, so the log reads as one run's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from mel.artifacts import atomic_file

LOG_NAME = "train-log.jsonl"


class TrainLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def truncate_after(self, global_step: int, completed_rounds: int) -> None:
        """Drop what a resumed run will write again: records past `global_step`,
        and at that step the records of rounds after `completed_rounds`."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut short by the interruption
            step = record.get("global_step", 0)
            if step < global_step or (step == global_step and (
                    record.get("event") in ("start", "resume", "steps")
                    or record.get("round", 0) <= completed_rounds)):
                kept.append(line)
        with atomic_file(self.path) as tmp:
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))

    def write(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "ab") as handle:
            handle.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
