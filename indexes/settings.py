"""Index build settings, and the search configuration each shard gets from its size.

Each shard gets the configuration that ScaNN's own rules of thumb give for its
size (ScaNN docs, "algorithms.md"): brute force below ~20k points; asymmetric
hashing (AH, 2 dimensions per block, anisotropic threshold 0.2 for dot product)
with exact reordering below ~100k; above that a k-means tree with ≈ √n leaves
in front of AH and reordering. Every value can be overridden in IndexSettings.
Defaults measured by bench/bench_index.py (1M x 384, clustered): a 250k
training sample gives clearly better leaves than ScaNN's 100k, and searching
a tenth of the leaves gives recall@10 ≈ 0.99 against exact search.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ALGORITHMS = ("exact", "brute_force", "asymmetric_hashing", "tree_ah")

# Below these sizes AH / a tree cannot be trained meaningfully; fall back to
# the next simpler algorithm (LUT16 has 16 centres per block).
_MIN_AH_POINTS = 256
_MIN_POINTS_PER_LEAF = 20


@dataclass(frozen=True)
class IndexSettings:
    """Build settings of an index; recorded in its manifest."""

    shard_size: int = 1_000_000
    brute_force_below: int = 20_000  # shards smaller than this: brute force
    partition_above: int = 100_000  # shards at least this big: tree + AH + reorder
    num_leaves: int | None = None  # None: ≈ √(shard entries)
    leaves_to_search: int | None = None  # None: num_leaves / leaves_to_search_divisor
    leaves_to_search_divisor: int = 10
    reorder_num_neighbors: int = 100  # AH candidates rescored exactly (at least k)
    dims_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_sample_size: int = 250_000  # points sampled to train the tree and AH
    training_threads: int = 0  # 0: all cores
    scann: bool = True  # False: no ScaNN searchers; the index is searched exactly

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        for name in ("num_leaves", "leaves_to_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.leaves_to_search_divisor < 1 or self.reorder_num_neighbors < 1 or self.dims_per_block < 1:
            raise ValueError("leaves_to_search_divisor, reorder_num_neighbors and dims_per_block must be ≥ 1")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> IndexSettings:
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class ShardSearchConfig:
    """How one shard is searched; recorded per shard in the manifest."""

    algorithm: str  # one of ALGORITHMS
    entries: int
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder_num_neighbors: int = 0
    dims_per_block: int = 0
    anisotropic_quantization_threshold: float = 0.0
    training_sample_size: int = 0

    @property
    def uses_scann(self) -> bool:
        return self.algorithm != "exact"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ShardSearchConfig:
        config = cls(**data)
        if config.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {config.algorithm!r}")
        return config


def shard_search_config(entries: int, settings: IndexSettings) -> ShardSearchConfig:
    """ScaNN's rules of thumb for a shard of `entries` vectors."""
    if not settings.scann:
        return ShardSearchConfig("exact", entries)
    if entries < max(settings.brute_force_below, _MIN_AH_POINTS):
        return ShardSearchConfig("brute_force", entries)
    ah: dict[str, Any] = dict(
        reorder_num_neighbors=settings.reorder_num_neighbors,
        dims_per_block=settings.dims_per_block,
        anisotropic_quantization_threshold=settings.anisotropic_quantization_threshold,
        training_sample_size=min(entries, settings.training_sample_size),
    )
    num_leaves = settings.num_leaves or round(math.sqrt(entries))
    num_leaves = min(num_leaves, entries // _MIN_POINTS_PER_LEAF)
    if entries < settings.partition_above or num_leaves < 2:
        return ShardSearchConfig("asymmetric_hashing", entries, **ah)
    leaves_to_search = settings.leaves_to_search or math.ceil(num_leaves / settings.leaves_to_search_divisor)
    return ShardSearchConfig(
        "tree_ah", entries, num_leaves=num_leaves, leaves_to_search=min(leaves_to_search, num_leaves), **ah
    )
