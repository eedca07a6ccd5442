"""Index search with the right encoder: the stage that link, eval and train query through.

An index's manifest says which model encoded it and how queries must be
encoded (the mention in context, or the mention string alone). A `Retriever`
opens both, refuses a model whose checksum differs from the manifest's
(unless told to allow it, for experiments), and turns mentions into top-k
distinct QIDs in steps: `query_ids` (tokenise; cheap, run ahead in the
pipeline's reader), `encode` and `search_vectors` (`search` does both; on a GPU
the pipeline runs them on separate threads, so that searching overlaps encoding).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mel.encoding import Encoder
from mel.errors import ArtifactError, MelError, ModelError
from mel.indexes.manifest import QUERY_ENCODINGS
from mel.indexes.searcher import Index, SearchResult
from mel.mentions import MentionSpan
from mel.model_cache import resolve_model
from mel.models import ModelFolder


class ModelMismatchError(MelError):
    pass


def recorded_identity(record: dict) -> str | None:
    """The model an index records: its identity (mel.models); indexes of older mel
    record the fp32 graph's sha256 only, as "checksum"."""
    return record.get("identity") or record.get("checksum")


def model_matches(record: dict, model: ModelFolder) -> bool | None:
    """Whether `model` is the one an index's model record names (None: it names none)."""
    if record.get("identity"):
        return record["identity"] == model.identity
    if record.get("checksum"):
        return record["checksum"] == model.manifest.checksum
    return None


def model_for_index(folder: Path, record: dict | None, model: str | None,
                    announce: Callable[[str], None] | None = None) -> ModelFolder:
    """The model named by --model, else the one recorded in the index manifest (`record`), else the default."""
    if model is not None:
        return resolve_model(model, announce=announce)
    record = record or {}
    recorded = record.get("path")
    if recorded and Path(recorded).is_dir():
        return ModelFolder.open(recorded)
    found = resolve_model(None, announce=announce)
    if model_matches(record, found) is False:
        raise ModelError(f"{folder}: built with model {recorded or record.get('source')} "
                         f"(identity {str(recorded_identity(record))[:12]}…), which is not at that path; "
                         "pass it with --model")
    return found


def check_model(folder: Path, record: dict | None, dims: Sequence[int], encoder: Encoder,
                allow_mismatch: bool = False) -> None:
    """The model must be the index's: its identity is computed from the files' sha256, and the
    file the encoder runs was checked against its own when it was loaded; and it must give
    vectors of the index's dimension."""
    record = record or {}
    if model_matches(record, encoder.model) is False and not allow_mismatch:
        expected = str(recorded_identity(record))
        raise ModelMismatchError(
            f"{folder}: the index was built with model {expected[:12]}… ({record.get('source')}) "
            f"but {encoder.model.path} is model {encoder.identity[:12]}…; its vectors would not be comparable "
            "(use the same model, or --allow-model-mismatch to experiment)")
    for dim in dims:
        if dim != encoder.dim:
            raise ModelMismatchError(f"{folder}: index vectors have {dim} dimensions, the model gives {encoder.dim}")


def query_encoding_of(index: Index) -> str:
    """How queries are encoded, as the index says; an index that does not say is refused
    (guessing "context" for a label index would search it with the wrong queries)."""
    encoding = index.manifest.extra.get("query_encoding")
    if encoding not in QUERY_ENCODINGS:
        raise ArtifactError(f"{index.folder}/manifest.json: query_encoding {encoding!r} is not one of "
                            f"{', '.join(QUERY_ENCODINGS)} (an index made by `mel index build` says which)")
    return encoding


@dataclass(frozen=True)
class EncoderSettings:
    """How to run the encoder: the `--model/--device/--precision/--threads/--batch-size` options."""

    model: str | None = None
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    batch_size: int | None = None  # None: sized automatically (mel.encoding)

    def open(self, model: ModelFolder, **options) -> Encoder:
        return Encoder(model, device=self.device, precision=self.precision, threads=self.threads,
                       batch_size=self.batch_size, **options)


@dataclass
class Retriever:
    index: Index
    encoder: Encoder
    # Wall seconds spent encoding and searching (for the link benchmark's stage shares).
    seconds: dict[str, float] = field(default_factory=lambda: {"encode": 0.0, "search": 0.0})

    @classmethod
    def open(cls, index_path: str | Path, encoder: EncoderSettings = EncoderSettings(), *, exact: bool = False,
             allow_model_mismatch: bool = False, announce: Callable[[str], None] | None = None,
             verify: bool = True, verify_folder: str | Path | None = None) -> Retriever:
        """`verify=False` (--no-verify) skips the index's checksums, for trusted local copies;
        `verify_folder` is the index a view folder belongs to (named when a check fails)."""
        index = Index(index_path, exact=True if exact else None, threads=encoder.threads, verify=verify,
                      verify_folder=verify_folder)
        retriever = cls(index, encoder.open(model_for_index(index.folder, index.manifest.model, encoder.model,
                                                            announce)))
        check_model(index.folder, index.manifest.model, [index.dim], retriever.encoder, allow_model_mismatch)
        query_encoding_of(index)  # refused now, not at the first query
        return retriever

    @property
    def query_encoding(self) -> str:
        return query_encoding_of(self.index)

    def query_ids(self, spans: Sequence[MentionSpan]) -> list[list[int]]:
        """Token ids of the queries, encoded as the index manifest says."""
        if self.query_encoding == "string":
            return self.encoder.tokens.strings([s.string for s in spans], role="mention")
        return self.encoder.tokens.mentions(spans, role="mention")

    def encode(self, query_ids: Sequence[Sequence[int]]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self.encoder.encode_ids(query_ids)
        self.seconds["encode"] += time.perf_counter() - started
        return vectors

    def search_vectors(self, vectors: np.ndarray, k: int) -> SearchResult:
        started = time.perf_counter()
        result = self.index.search(vectors, k)
        self.seconds["search"] += time.perf_counter() - started
        return result

    def search(self, query_ids: Sequence[Sequence[int]], k: int) -> SearchResult:
        """Encode the tokenised queries and return each one's top-k distinct QIDs."""
        return self.search_vectors(self.encode(query_ids), k)

    def describe(self) -> dict:
        """The index and model, for reports."""
        from mel.artifacts import sha256_file

        index, encoder, manifest = self.index, self.encoder, self.index.manifest
        return {
            "index": {"path": str(index.folder), "manifest_sha256": sha256_file(index.folder / "manifest.json"),
                      "entries": manifest.counts.entries, "qids": manifest.counts.qids,
                      "kinds": list(manifest.counts.by_kind), "query_encoding": self.query_encoding,
                      "sources": manifest.extra.get("sources"), "search": "exact" if index.exact else "scann"},
            "model": {"identity": encoder.identity, "checksum": encoder.checksum, "path": str(encoder.model.path),
                      "source": encoder.manifest.source, "precision": encoder.precision, "device": encoder.device,
                      "index_model_checksum": (manifest.model or {}).get("checksum"),
                      "index_model_identity": (manifest.model or {}).get("identity")},
        }
