"""The ScaNN backend: building, saving and loading one shard's searcher.

ScaNN writes document ids with pickle and its loader unpickles them, so we
build searchers without docids, load them through the C++ constructor
directly, and refuse any folder holding a pickle.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from mel.errors import ArtifactError
from mel.indexes.integrity import check_name, inside
from mel.indexes.settings import ShardSearchConfig
from mel.indexes.store import npy_chunks, read_npy_rows

PICKLE_SUFFIXES = (".pkl", ".pickle")
SCANN_ASSETS = "scann_assets.pbtxt"
_BRUTE_FORCE_SEED_ROWS = 256  # brute force trains nothing; it is seeded with a few rows
_UPSERT_CHUNK_ROWS = 1 << 15
_UPSERT_BATCH = 1024


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


def asset_paths(assets_text: str) -> list[str]:
    """The files a scann_assets.pbtxt tells ScaNN to read."""
    return re.findall(r'asset_path:\s*"((?:[^"\\]|\\.)*)"', assets_text)


def load_scann_searcher(folder: Path, threads: int | None = None, listed: Collection[str] | None = None):
    """Load a serialized searcher without ScaNN's unpickling loader.

    Each asset ScaNN is told to read must be a plain relative name inside `folder`
    and, given `listed` (the files whose checksums the manifest holds), one of them.
    """
    folder = Path(folder)
    refuse_pickles(folder)
    assets = folder / SCANN_ASSETS
    try:
        assets_text = assets.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{assets}: file not found") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ArtifactError(f"{assets}: not readable ({exc})") from None
    for name in asset_paths(assets_text):
        inside(folder, check_name(name, str(assets)), str(assets))
        if listed is not None and name not in listed:
            raise ArtifactError(f"{assets}: asset {name!r} has no checksum in the index manifest")
    ops = _scann_ops()
    # Relative asset paths in the .pbtxt are resolved against the folder we pass.
    try:
        native = ops.scann_pybind.ScannNumpy(str(folder), assets_text)
    except Exception as exc:
        raise ArtifactError(f"{folder}: ScaNN could not load the searcher ({exc})") from exc
    searcher = ops.ScannSearcher(native, docids=None)
    searcher.set_num_threads(threads or os.cpu_count() or 1)
    return searcher
