"""Sharded vector indexes of knowledge-base entries (format `mel.index.v1`).

Build (streaming, resumable):

    from mel.indexes import IndexWriter, IndexSettings
    with IndexWriter("idx/es", dim=384, extra={"model": {...}, "query_encoding": "context"}) as writer:
        writer.add(vectors, ["Q90", ...], "description", "es", ["Paris", ...])

Search:

    from mel.indexes import Index
    index = Index("idx/es")                    # exact=True for NumPy scoring
    result = index.search(query_vectors, k=10)  # result.qids / .scores / .entry_ids, (n, k)

Check and describe: `verify(folder, sample=1000)`, `info(folder)`.
"""

from mel.indexes.builder import EntryBatch, IndexWriter, build_index, partial_folder
from mel.indexes.manifest import FORMAT, KINDS, IndexCounts, IndexManifest, ShardRecord, read_manifest
from mel.indexes.scann_backend import scann_available
from mel.indexes.searcher import Index, SearchResult, open_index
from mel.indexes.settings import IndexSettings, ShardSearchConfig, shard_search_config
from mel.indexes.store import Entry
from mel.indexes.verify import IndexInfo, ShardInfo, VerifyReport, info, verify

__all__ = [
    "FORMAT",
    "KINDS",
    "Entry",
    "EntryBatch",
    "Index",
    "IndexCounts",
    "IndexInfo",
    "IndexManifest",
    "IndexSettings",
    "IndexWriter",
    "SearchResult",
    "ShardInfo",
    "ShardRecord",
    "ShardSearchConfig",
    "VerifyReport",
    "build_index",
    "info",
    "open_index",
    "partial_folder",
    "read_manifest",
    "scann_available",
    "shard_search_config",
    "verify",
]
