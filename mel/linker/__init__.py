"""The linker: candidates from every view and table of an index, fused by a reranker (docs/method.md)."""
