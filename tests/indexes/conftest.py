"""Fixtures for the index tests."""

from __future__ import annotations

import pytest

from tests.indexes.index_helpers import SHARD_SIZE, BuiltIndex, entry_data, write_index


@pytest.fixture(scope="session")
def tree_index(tmp_path_factory) -> BuiltIndex:
    """10,000 entries in 4 shards of tree + AH + reorder searchers, one QID each."""
    vectors, qids, langs, labels = entry_data(4 * SHARD_SIZE)
    folder = tmp_path_factory.mktemp("tree") / "index"
    extra = {"model": {"checksum": "c0ffee", "name": "test"}, "query_encoding": "context"}
    write_index(folder, vectors, qids, langs, labels, extra=extra)
    return BuiltIndex(folder, vectors, qids, langs, labels)
