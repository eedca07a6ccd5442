"""Checkpoints: a Hugging Face-style folder plus the trainer's state, written atomically.

    checkpoint/
      config.json         BertModel config (transformers and `mel model export` read it)
      model.safetensors   the weights, named as in BertModel, `[M]` row included
      tokenizer.json      the tokenizer with `[M]`
      mel-model.json      mel manifest: pooling, prefixes, max length, marker, round/step
      trainer/state.json          round, step, stream cursor, history, optimizer settings
      trainer/optimizer.safetensors  Adam's moments and step counts, by parameter name
      trainer/rng.safetensors        every rank's torch RNG state (CPU and CUDA)

No pickle: tensors go to safetensors, everything else to JSON. The folder is
written next to its place and swapped in whole (mel.artifacts.atomic_folder),
so a stop at any moment leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy_file
from safetensors.numpy import save_file as save_numpy_file
from safetensors.torch import load_file, save_file

from mel import __version__
from mel.artifacts import atomic_folder, read_json, write_json
from mel.errors import ArtifactError
from mel.models import MANIFEST_NAME
from mel.records import MENTION_MARKER
from mel.training.torch_model import BiEncoder

CHECKPOINT_FORMAT = "mel.checkpoint.v1"
STATE_FORMAT = "mel.train.state.v1"
TRAINER = "trainer"


@dataclass
class TrainerState:
    """Where a run stands: `step` steps of round `round` (0-based) are done;
    `cursor` is the stream position where that round's mentions start."""

    round: int = 0
    step: int = 0
    global_step: int = 0
    cursor: int = 0
    world_size: int = 1
    history: list[dict] = field(default_factory=list)  # one record per finished round (and the baseline)
    scaler: dict | None = None  # float16 GradScaler state
    # The current round's loss tally (averaged over ranks) and time so far.
    loss_sum: float = 0.0
    loss_steps: int = 0
    loss_first: float | None = None
    loss_last: float | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict, where: str = "state.json") -> TrainerState:
        if data.get("format") != STATE_FORMAT:
            raise ArtifactError(f"{where}: not a mel training state (format {data.get('format')!r})")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def find_checkpoint(run: Path) -> Path | None:
    """The run's checkpoint; the previous one when a swap was cut short."""
    for candidate in (run / "checkpoint", run / ".checkpoint.old"):
        if (candidate / TRAINER / "state.json").is_file():
            return candidate
    return None


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict, list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{names[index]}/{key}"] = tensor.detach().cpu().contiguous()
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"})
    return tensors, groups


def save_checkpoint(
    folder: Path,
    *,
    model: BiEncoder,
    tokenizer,
    pooling: str,
    prefixes: dict,
    max_length: int,
    source: str,
    optimizer: torch.optim.Optimizer,
    parameter_names: list[str],
    state: TrainerState,
    rng_states: dict[str, np.ndarray],
) -> None:
    """Write the whole checkpoint; `model` is the BiEncoder (not the DDP wrapper)."""
    tensors, groups = _optimizer_tensors(optimizer, parameter_names)
    with atomic_folder(folder, force=True) as tmp:
        write_json(tmp / "config.json", model.bert.config.to_hf())
        weights = {name: t.detach().to("cpu", torch.float32).contiguous()
                   for name, t in model.bert.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(tmp / MANIFEST_NAME, {
            "format": CHECKPOINT_FORMAT, "pooling": pooling, "prefixes": dict(prefixes), "max_length": max_length,
            "marker": MENTION_MARKER, "marker_id": tokenizer.token_to_id(MENTION_MARKER), "source": source,
            "round": state.round, "step": state.step, "global_step": state.global_step, "mel_version": __version__,
        })
        (tmp / TRAINER).mkdir()
        save_file(tensors, str(tmp / TRAINER / "optimizer.safetensors"))
        save_numpy_file({k: np.ascontiguousarray(v) for k, v in rng_states.items()},
                        str(tmp / TRAINER / "rng.safetensors"))
        write_json(tmp / TRAINER / "state.json", {**state.to_json(), "param_groups": groups,
                                                  "parameters": list(parameter_names)})


def read_state(folder: Path) -> TrainerState:
    path = folder / TRAINER / "state.json"
    return TrainerState.from_json(read_json(path), str(path))


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, parameter_names: list[str]) -> None:
    """Restore Adam's state saved by save_checkpoint (parameters matched by name)."""
    data = read_json(folder / TRAINER / "state.json")
    saved = data.get("parameters", [])
    if saved != list(parameter_names):
        raise ArtifactError(f"{folder}: the checkpoint's parameters differ from the model's (another model?)")
    tensors = load_file(str(folder / TRAINER / "optimizer.safetensors"))
    per_parameter: dict[int, dict] = {}
    for key, tensor in tensors.items():
        name, _, slot = key.rpartition("/")
        per_parameter.setdefault(parameter_names.index(name), {})[slot] = tensor
    groups = []
    for group, current in zip(data["param_groups"], optimizer.state_dict()["param_groups"]):
        restored = {k: (tuple(v) if k == "betas" else v) for k, v in group.items()}
        groups.append({**restored, "params": current["params"]})
    optimizer.load_state_dict({"state": per_parameter, "param_groups": groups})


def load_rng_states(folder: Path) -> dict[str, np.ndarray]:
    path = folder / TRAINER / "rng.safetensors"
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found (incomplete checkpoint)")
    return load_numpy_file(str(path))


def checkpoint_exists(folder: Path) -> bool:
    return (folder / TRAINER / "state.json").is_file() and os.path.isfile(folder / "model.safetensors")
