"""Several processes (GPUs or machines) through torch.distributed, launched by torchrun.

    torchrun --nproc-per-node 4 --no-python mel train --kb … -o runs/es

Each rank mines and trains its share of the mentions; rank 0 tokenises the
KB, builds each round's index (the ranks embed the KB between them), evaluates
and writes checkpoints; the others wait at barriers. The run folder must be on
a filesystem all ranks see (a shared one across machines). Gradients are
averaged by DistributedDataParallel; each rank's in-batch softmax covers its
own batch. One process without torchrun is the world of one.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mel.errors import InputError

# Rank 0 tokenises the KB and builds indexes while the others wait.
_TIMEOUT = datetime.timedelta(hours=6)


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a float over the ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.size

    def total(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def gather_bytes(self, data: np.ndarray) -> list[np.ndarray]:
        """Every rank's uint8 array (all the same length), on every rank."""
        if not self.enabled:
            return [data]
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).to(self.device)
        out = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(out, tensor)
        return [t.cpu().numpy() for t in out]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's boolean, on every rank."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, 0)
        return bool(tensor.item())

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous slice [start, stop) of n rows."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size


def choose_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch has no CUDA (install a CUDA build of torch, or use --device cpu)")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def start_world(device: str) -> World:
    """Join the process group when torchrun started us; else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = choose_device(device, local_rank)
    if size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_TIMEOUT, device_id=chosen if chosen.type == "cuda" else None)
    return World(rank, size, local_rank, chosen)


def end_world(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()
