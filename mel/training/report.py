"""The run's log (JSON Lines) and its table of rounds.

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
from rich.table import Table

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


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def rounds_table(history: list[dict], title: str = "Training rounds") -> Table:
    """One row per round (round 0: the model before training, when evaluated)."""
    table = Table(title=title, title_justify="left")
    for name, justify in (("round", "right"), ("steps", "right"), ("loss", "right"), ("R@1", "right"),
                          ("R@10", "right"), ("in KB", "right"), ("k grown", "right"), ("minutes", "right")):
        table.add_column(name, justify=justify)
    for record in history:
        evaluation = record.get("eval") or {}
        mining = record.get("mining") or {}
        loss = record.get("loss")
        table.add_row(
            str(record["round"]),
            f"{record.get('steps', 0):,}",
            "" if loss is None else f"{loss:.4f}",
            _percent(evaluation.get("r@1")),
            _percent(evaluation.get("r@10")),
            _percent(evaluation.get("in_kb")),
            "" if not mining else f"{mining.get('grown', 0):,}",
            "" if record.get("seconds") is None else f"{record['seconds'] / 60:.1f}",
        )
    return table
