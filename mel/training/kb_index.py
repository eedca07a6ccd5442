"""The index of the current model's KB embeddings, built once per model version.

Version r is the model at the start of round r (version r+1, built after round
r, serves both that round's evaluation and the next round's mining). All ranks
embed a slice of the tokenised KB into one shared vector file; rank 0 feeds it
to the index module's IndexWriter (ScaNN shards, or exact search where ScaNN
is missing); then every rank opens the finished index.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mel.indexes.builder import IndexWriter
from mel.indexes.manifest import MANIFEST_FILE
from mel.indexes.settings import IndexSettings
from mel.training.distributed import World
from mel.training.kb_store import KBStore

EMBED_CHUNK = 65_536


def index_folder(work: Path, version: int) -> Path:
    return work / f"index-{version:02d}"


def is_built(folder: Path) -> bool:
    # IndexWriter renames the folder into place only after writing its manifest.
    return (folder / MANIFEST_FILE).is_file()


def build_kb_index(
    work: Path,
    version: int,
    kb: KBStore,
    world: World,
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    dim: int,
    settings: IndexSettings = IndexSettings(),
    extra: dict | None = None,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> Path:
    """Build (or find already built) index `version`; collective over the ranks."""
    folder = index_folder(work, version)
    if world.broadcast_flag(is_built(folder)):
        return folder
    vectors_path = work / f"index-{version:02d}.vectors.npy"
    if world.is_main:
        np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=(len(kb), dim)).flush()
    world.barrier()
    vectors = np.lib.format.open_memmap(vectors_path, mode="r+")
    start, stop = world.share(len(kb))
    advance = progress("embedding the KB", stop - start) if progress else None
    for lo in range(start, stop, EMBED_CHUNK):
        hi = min(stop, lo + EMBED_CHUNK)
        vectors[lo:hi] = embed(np.asarray(kb.tokens[lo:hi]), kb.lengths[lo:hi])
        if advance:
            advance(hi - lo)
    vectors.flush()
    del vectors
    world.barrier()
    if world.is_main:
        vectors = np.load(vectors_path, mmap_mode="r")
        advance = progress("building the index", len(kb)) if progress else None
        labels = kb.labels()
        with IndexWriter(folder, dim, settings=settings, extra=extra or {}, force=True) as writer:
            for lo in range(0, len(kb), EMBED_CHUNK):
                hi = min(len(kb), lo + EMBED_CHUNK)
                langs = [kb.languages[code] for code in kb.langs[lo:hi]]
                writer.add(np.asarray(vectors[lo:hi]), kb.qids[lo:hi], "description", langs,
                           [next(labels) for _ in range(hi - lo)])
                if advance:
                    advance(hi - lo)
        del vectors
        vectors_path.unlink()
    world.barrier()
    return folder


def remove_index(work: Path, version: int, world: World) -> None:
    if world.is_main:
        shutil.rmtree(index_folder(work, version), ignore_errors=True)
