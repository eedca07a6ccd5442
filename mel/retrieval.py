"""Index search with the right encoder: the stage link, eval and train query through.

An index's manifest says which model encoded it and how queries must be
encoded (mention in context, or the mention string alone). A `Retriever`
opens both, refuses a model whose checksum differs from the manifest's
(unless told to allow it, for experiments), and turns mentions into top-k
distinct QIDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mel.indexes.searcher import Index, SearchResult
from mel.encoding import Encoder
from mel.errors import MelError, ModelError
from mel.mentions import MentionSpan
from mel.models import ModelFolder
from mel.model_cache import resolve_model


class ModelMismatchError(MelError):
    pass


def model_for_index(index: Index, model: str | None, announce: Callable[[str], None] | None = None) -> ModelFolder:
    """The model named by --model, else the one recorded in the index manifest, else the default."""
    if model is not None:
        return resolve_model(model, announce=announce)
    record = index.manifest.model or {}
    recorded = record.get("path")
    if recorded and Path(recorded).is_dir():
        return ModelFolder.open(recorded)
    folder = resolve_model(None, announce=announce)
    if record.get("checksum") and folder.manifest.checksum != record["checksum"]:
        raise ModelError(f"{index.folder}: built with model {recorded or record.get('source')} "
                         f"(sha256 {record['checksum'][:12]}…), which is not at that path; pass it with --model")
    return folder


def check_model(index: Index, encoder: Encoder, allow_mismatch: bool = False) -> None:
    record = index.manifest.model or {}
    expected = record.get("checksum")
    if expected and expected != encoder.checksum and not allow_mismatch:
        raise ModelMismatchError(
            f"{index.folder}: the index was built with model sha256 {expected[:12]}… ({record.get('source')}) "
            f"but {encoder.model.path} has sha256 {encoder.checksum[:12]}…; its vectors would not be comparable "
            "(use the same model, or --allow-model-mismatch to experiment)")
    if index.dim != encoder.dim:
        raise ModelMismatchError(f"{index.folder}: index vectors have {index.dim} dimensions, "
                                 f"the model gives {encoder.dim}")


@dataclass
class Retriever:
    index: Index
    encoder: Encoder

    @classmethod
    def open(cls, index_path: str | Path, *, model: str | None = None, device: str = "auto",
             precision: str = "auto", threads: int | None = None, batch_size: int = 64, exact: bool = False,
             allow_model_mismatch: bool = False, announce: Callable[[str], None] | None = None) -> "Retriever":
        index = Index(index_path, exact=True if exact else None, threads=threads)
        encoder = Encoder(model_for_index(index, model, announce), device=device, precision=precision,
                          threads=threads, batch_size=batch_size)
        check_model(index, encoder, allow_model_mismatch)
        return cls(index, encoder)

    @property
    def query_encoding(self) -> str:
        return self.index.manifest.extra.get("query_encoding", "context")

    def query_ids(self, spans: Sequence[MentionSpan]) -> list[list[int]]:
        """Token ids of the queries, encoded as the index manifest says."""
        if self.query_encoding == "string":
            return self.encoder.tokens.strings([s.text[s.start:s.end] for s in spans], role="mention")
        return self.encoder.tokens.mentions(spans, role="mention")

    def search_vectors(self, vectors: np.ndarray, k: int) -> SearchResult:
        return self.index.search(vectors, k)

    def search(self, spans: Sequence[MentionSpan], k: int) -> SearchResult:
        return self.search_vectors(self.encoder.encode_ids(self.query_ids(spans)), k)
