"""The options of a training run, and how they are checked and recorded.

Defaults follow the thesis (docs/method.md): 5 rounds, batch 32 with 7 hard
negatives each, logit multiplier 50, k = 100, 2·10⁴ steps in the first round
and 10⁵ in later ones, Adam at 1e-5 with a step decay of 0.998 in the last
round. The thesis gives the decay rate, not its interval; we decay every
`lr_decay_every` steps (100: over a 10⁵-step round the rate ends near 0.14×).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mel.errors import InputError
from mel.gold import EvalSpec
from mel.runtime import DEVICES

FIRST_ROUND_NEGATIVES = ("context", "mention")
POOLINGS = ("pooler", "cls", "mean")

# Fields that do not change the result: a resumed run may give new values.
_RESUMABLE_FIELDS = {"output", "device", "eval", "checkpoint_every", "log_every", "encode_batch_size", "precisions",
                     "quiet", "keep_work", "force", "resume", "threads"}


@dataclass(frozen=True)
class TrainSettings:
    """Everything a `mel train` run depends on; recorded in run.json."""

    kb: tuple[str, ...]
    links: tuple[str, ...]
    model: str
    output: str
    langs: tuple[str, ...] | None = None
    rounds: int = 5
    batch_size: int = 32
    negatives: int = 7
    logit_multiplier: float = 50.0
    k: int = 100
    steps_first: int = 20_000
    steps: int = 100_000
    lr: float = 1e-5
    lr_decay: float = 0.998
    lr_decay_every: int = 100
    first_round_negatives: str = "context"
    pooling: str | None = None  # None: from the checkpoint (mel manifest, pooler when present, else mean)
    max_length: int = 64
    dropout: float = 0.1
    eval: str | None = None
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 2000
    log_every: int = 100
    encode_batch_size: int = 256
    precisions: tuple[str, ...] = ("fp32", "int8")
    threads: int | None = None
    keep_work: bool = False
    quiet: bool = False
    resume: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        positive = ("rounds", "batch_size", "negatives", "k", "steps_first", "steps", "lr_decay_every",
                    "checkpoint_every", "log_every", "encode_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not self.kb:
            raise InputError("--kb: give at least one knowledge base (DaMuEL folder or mel KB JSONL)")
        if not self.links:
            raise InputError("--links: give at least one source of training mentions (DaMuEL folder or "
                             "mel documents JSONL with gold qids)")
        if self.lr <= 0 or not 0 < self.lr_decay <= 1:
            raise InputError("--lr must be positive and --lr-decay in (0, 1]")
        if self.logit_multiplier <= 0:
            raise InputError("--logit-multiplier must be positive")
        if not 0 <= self.dropout < 1:
            raise InputError("--dropout must be in [0, 1)")
        if self.first_round_negatives not in FIRST_ROUND_NEGATIVES:
            raise InputError(f"--first-round-negatives must be one of {', '.join(FIRST_ROUND_NEGATIVES)}")
        if self.device not in DEVICES:
            raise InputError(f"--device must be one of {', '.join(DEVICES)}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise InputError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if not 8 <= self.max_length <= 512:
            raise InputError("--max-length must be between 8 and 512")
        if self.eval is not None:
            EvalSpec.parse(self.eval)

    @property
    def eval_spec(self) -> EvalSpec | None:
        return EvalSpec.parse(self.eval) if self.eval else None

    @property
    def out(self) -> Path:
        return Path(self.output)

    def steps_in_round(self, round_index: int) -> int:
        """Optimizer steps of round `round_index` (0-based)."""
        return self.steps_first if round_index == 0 else self.steps

    def lr_at(self, round_index: int, step: int) -> float:
        """Learning rate of step `step` (0-based) of a round: constant, then step
        decay in the last round. A pure function, so a resumed run needs no
        scheduler state."""
        if round_index < self.rounds - 1:
            return self.lr
        return self.lr * self.lr_decay ** (step // self.lr_decay_every)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("kb", "links", "langs", "precisions"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("kb", "links", "langs", "precisions"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def differences(self, other: TrainSettings) -> list[str]:
        """Options that change the result and differ between two runs."""
        mine, theirs = self.to_json(), other.to_json()
        return sorted(name for name in mine if name not in _RESUMABLE_FIELDS and mine[name] != theirs.get(name))
