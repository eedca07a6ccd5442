"""ScaNN configuration per shard, and building, saving and loading searchers.

Each shard gets the configuration that ScaNN's own rules of thumb give for its
size (ScaNN docs, "algorithms.md"): brute force below ~20k points; asymmetric
hashing (AH, 2 dimensions per block, anisotropic threshold 0.2 for dot product)
with exact reordering below ~100k; above that a k-means tree with ≈ √n leaves
in front of AH and reordering. Every value can be overridden in IndexSettings.
Defaults measured by bench/bench_index.py (1M x 384, clustered): a 250k
training sample gives clearly better leaves than ScaNN's 100k, and searching
a tenth of the leaves gives recall@10 ≈ 0.99 against exact search.

ScaNN writes document ids with pickle and its loader unpickles them, so we
build searchers without docids, load them through the C++ constructor
directly, and refuse any folder holding a pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mel.indexes.store import npy_chunks, read_npy_rows
from mel.errors import ArtifactError

ALGORITHMS = ("exact", "brute_force", "asymmetric_hashing", "tree_ah")
PICKLE_SUFFIXES = (".pkl", ".pickle")
SCANN_ASSETS = "scann_assets.pbtxt"

# Below these sizes AH / a tree cannot be trained meaningfully; fall back to
# the next simpler algorithm (LUT16 has 16 centres per block).
_MIN_AH_POINTS = 256
_MIN_POINTS_PER_LEAF = 20
_BRUTE_FORCE_SEED_ROWS = 256  # brute force trains nothing; it is seeded with a few rows
_UPSERT_CHUNK_ROWS = 1 << 15
_UPSERT_BATCH = 1024


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
    def from_json(cls, data: dict) -> "IndexSettings":
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
    def from_json(cls, data: dict) -> "ShardSearchConfig":
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
    ah = dict(
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


def scann_available() -> bool:
    try:
        import scann  # noqa: F401
    except ImportError:
        return False
    return True


def _scann_ops():
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


@contextlib.contextmanager
def native_stderr_to_file(folder: Path) -> Iterator[Path]:
    """Send file descriptor 2 to a log file while native code runs.

    ScaNN's C++ logging (absl) writes INFO lines straight to fd 2, which would
    break the progress display; the log is kept only for error messages.
    """
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    fd, name = tempfile.mkstemp(prefix="scann.", suffix=".log", dir=folder)
    saved = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        Path(name).unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def build_scann_searcher(
    vectors_path: Path, rows: int, config: ShardSearchConfig, threads: int, log_folder: Path, seed: int = 0
):
    """A ScaNN searcher (dot product, no docids) over the rows of a float32 .npy file.

    ScaNN's one-call build copies the whole dataset and then trains on it,
    which peaks at over 3x the vectors. Instead we train on a random sample,
    remove the sample again, and stream every row in, in file order, through
    ScaNN's own upsert: the partitioner and codebooks are the same as a
    one-call build that samples `training_sample_size` points, and memory
    peaks near one copy of the vectors.
    """
    ops = _scann_ops()
    sample_size = min(rows, config.training_sample_size or _BRUTE_FORCE_SEED_ROWS)
    sample_rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample_size, replace=False))
    sample = read_npy_rows(vectors_path, sample_rows)
    builder = ops.builder(sample, 10, "dot_product").set_n_training_threads(threads)
    if config.algorithm == "brute_force":
        builder = builder.score_brute_force()
    elif config.algorithm in ("asymmetric_hashing", "tree_ah"):
        if config.algorithm == "tree_ah":
            builder = builder.tree(
                num_leaves=config.num_leaves,
                num_leaves_to_search=config.leaves_to_search,
                training_sample_size=sample_size,
            )
        builder = builder.score_ah(
            config.dims_per_block,
            anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
            training_sample_size=sample_size,
        ).reorder(config.reorder_num_neighbors)
    else:
        raise ValueError(f"no ScaNN searcher for algorithm {config.algorithm!r}")
    with native_stderr_to_file(log_folder) as log:
        try:
            searcher = builder.build()
            del sample
            native = searcher.searcher
            native.delete(list(range(sample_size - 1, -1, -1)))  # from the end: no index moves
            searcher.reserve(rows)
            for chunk in npy_chunks(vectors_path, _UPSERT_CHUNK_ROWS):
                native.upsert([None] * len(chunk), chunk, _UPSERT_BATCH)
        except Exception as exc:  # ScaNN raises plain RuntimeError/ValueError
            detail = _last_line(log) or str(exc)
            raise ArtifactError(f"ScaNN could not build a {config.algorithm} searcher: {detail}") from exc
    if searcher.size() != rows:
        raise ArtifactError(f"ScaNN searcher holds {searcher.size()} points, expected {rows}")
    return searcher


def save_scann_searcher(searcher, folder: Path) -> None:
    """Serialize with paths relative to `folder`, so the index can be moved."""
    folder.mkdir(parents=True, exist_ok=True)
    searcher.serialize(str(folder), relative_path=True)
    pickles = find_pickles(folder)
    if pickles:  # only happens with docids, which we never pass
        raise ArtifactError(f"{pickles[0]}: ScaNN wrote a pickle; refusing to keep it")


def find_pickles(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(folder: Path) -> None:
    pickles = find_pickles(folder)
    if pickles:
        raise ArtifactError(f"{pickles[0]}: pickle files are never loaded; remove it or rebuild the index")


def load_scann_searcher(folder: Path, threads: int | None = None):
    """Load a serialized searcher without ScaNN's unpickling loader."""
    folder = Path(folder)
    refuse_pickles(folder)
    assets = folder / SCANN_ASSETS
    try:
        assets_text = assets.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{assets}: file not found") from None
    ops = _scann_ops()
    # Relative asset paths in the .pbtxt are resolved against the folder we pass.
    try:
        native = ops.scann_pybind.ScannNumpy(str(folder), assets_text)
    except Exception as exc:
        raise ArtifactError(f"{folder}: ScaNN could not load the searcher ({exc})") from exc
    searcher = ops.ScannSearcher(native, docids=None)
    searcher.set_num_threads(threads or os.cpu_count() or 1)
    return searcher
