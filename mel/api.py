"""The Python API: `mel link`, `mel model embed` and index search, from Python.

    import mel

    linker = mel.Linker.open("idx/es")              # the index's model; fp32/int8 as on the CLI
    for record in linker.link(records):             # dicts or JSON lines, any iterable
        ...                                         # exactly the records `mel link` writes
    model = mel.load_model()                        # the offline default model
    vectors = model.embed(["Paris", "París"], role="mention")
    hits = mel.open_index("idx/es").search(vectors, k=10)   # .qids, .scores, .entry_ids

The command line is a thin layer over these: `mel link` is `Linker.open(...)` then
`Linker.link_files` (or `Linker.link_shard`, or the Ray engine, which opens one
Linker per worker from `Linker.settings`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mel.documents import BadRecord, parse_document_line, parse_document_object
from mel.encoding import Encoder
from mel.errors import InputError
from mel.indexes.searcher import Index, SearchResult
from mel.link_runs import DEFAULT_SHARD_DOCS, RunStats, Shard, link_shard
from mel.linker.folder import VIEWS, LinkerIndex, is_linker_index
from mel.linking import LinkedRecord, LinkOptions, LinkStats, link_chunks, run_link
from mel.methods import DEFAULT_METHOD, open_ranker
from mel.model_cache import resolve_model
from mel.rankers import Ranker
from mel.records import Document
from mel.retrieval import EncoderSettings

__all__ = ["Index", "LinkOptions", "LinkStats", "Linker", "LinkerSettings", "Model", "SearchResult", "load_model",
           "open_index"]

ROLES = ("mention", "entity")


@dataclass(frozen=True)
class LinkerSettings:
    """Everything `Linker.open` needs: picklable, so that engines open one Linker per worker."""

    index: str | None = None
    method: str = DEFAULT_METHOD
    aliases: str | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    options: LinkOptions = field(default_factory=LinkOptions)
    exact: bool = False
    allow_model_mismatch: bool = False
    explain: bool = False  # each candidate's features (the fused linker)
    verify: bool = True  # False: skip the index's checksums (--no-verify)

    def open(self, announce: Callable[[str], None] | None = None) -> Linker:
        if self.options.min_prob is not None and self.method != "linker":
            raise InputError(f"min_prob needs method 'linker' (method {self.method!r} scores are not "
                             "probabilities; use min_score)")
        if self.explain and self.method != "linker":
            raise InputError("explain shows the fused linker's features: use it with method 'linker'")
        ranker = open_ranker(self.method, index=self.index, aliases=self.aliases, encoder=self.encoder,
                             exact=self.exact, allow_model_mismatch=self.allow_model_mismatch, announce=announce,
                             explain=self.explain, verify=self.verify)
        return Linker(ranker, self)


class Linker:
    """A ranker (index and model, or alias table) and the link options: documents in, output records out."""

    def __init__(self, ranker: Ranker, settings: LinkerSettings = LinkerSettings()):
        self.ranker = ranker
        self.settings = settings

    @classmethod
    def open(cls, index: str | os.PathLike | None = None, model: str | os.PathLike | None = None, *,
             device: str = "auto", precision: str = "auto", method: str = DEFAULT_METHOD,
             aliases: str | os.PathLike | None = None, top_k: int = 10, min_score: float | None = None,
             min_prob: float | None = None, explain: bool = False, strict: bool = False,
             threads: int | None = None, batch_size: int | None = None, exact: bool = False,
             allow_model_mismatch: bool = False, verify: bool = True,
             announce: Callable[[str], None] | None = None) -> Linker:
        """Open what `mel link` opens with the same options (`model=None`: the index's model; the default
        method, "linker", is the fused linker, whose scores are probabilities: `min_prob` makes a mention NIL
        below it, `explain` adds each candidate's features; `verify=False` is `--no-verify`). The ranker's
        notes (an untuned reranker, an old single-view index) are in `linker.notes`."""
        encoder = EncoderSettings(model=None if model is None else str(model), device=device, precision=precision,
                                  threads=threads, batch_size=batch_size)
        settings = LinkerSettings(index=None if index is None else str(index), method=method,
                                  aliases=None if aliases is None else str(aliases), encoder=encoder,
                                  options=LinkOptions(top_k=top_k, min_score=min_score, min_prob=min_prob,
                                                      strict=strict),
                                  exact=exact, allow_model_mismatch=allow_model_mismatch, explain=explain,
                                  verify=verify)
        return settings.open(announce)

    @property
    def options(self) -> LinkOptions:
        return self.settings.options

    @property
    def notes(self) -> list[str]:
        """What the user should be told about the ranker (as `mel link` prints it)."""
        return list(self.ranker.notes)

    def link(self, records: Iterable[Mapping[str, Any] | str | bytes]) -> Iterator[dict]:
        """The output record of every input record, in order: linked documents, and bad records with an
        "error" field (as `mel link` writes them). Records are dicts or JSON lines (str or bytes); blank
        lines are not records, as in a file. With `strict=True` a bad record raises `StrictStop`."""
        for linked in self.link_records(records):
            yield linked.record

    def link_records(self, records: Iterable[Mapping[str, Any] | str | bytes]) -> Iterator[LinkedRecord]:
        """Like `link`, with what each record counts for (its error message, mentions, linked mentions)."""
        return self.link_items(_documents(records))

    def link_items(self, items: Iterable[Document | BadRecord]) -> Iterator[LinkedRecord]:
        """Parsed records (`mel.documents.parse_document_line`) -> their output records, in order."""
        chunks = link_chunks(items, self.ranker, self.options)
        try:
            for chunk in chunks:
                yield from chunk
        finally:
            chunks.close()

    def link_files(self, inputs: str | Sequence[str], output: str = "-", *, errors: str | None = None,
                   progress: Callable[[LinkStats], None] | None = None) -> LinkStats:
        """`mel link INPUTS -o OUTPUT`: every input in order into one output file (or "-")."""
        return run_link(inputs, self.ranker, output, errors_path=errors, options=self.options, progress=progress)

    def link_shard(self, inputs: Sequence[str], out_dir: str, shard: Shard, *, force: bool = False,
                   compress: bool = False, shard_docs: int = DEFAULT_SHARD_DOCS,
                   progress: Callable[[LinkStats], None] | None = None) -> RunStats:
        """`mel link INPUTS --shard I/N -o OUTDIR`: this shard's documents into a run folder
        (`mel.link_runs` says which documents are the shard's)."""
        return link_shard(inputs, self.ranker, out_dir, shard, options=self.options, describe=self.describe(),
                          force=force, compress=compress, shard_docs=shard_docs, progress=progress)

    def describe(self) -> dict:
        """The method, index and model, as run manifests and reports record them."""
        return {"method": self.settings.method, **self.ranker.describe(), "top_k": self.options.top_k,
                "min_score": self.options.min_score, "min_prob": self.options.min_prob,
                "explain": self.settings.explain}


def _documents(records: Iterable[Mapping[str, Any] | str | bytes]) -> Iterator[Document | BadRecord]:
    for number, record in enumerate(records, start=1):
        if isinstance(record, Mapping):
            yield parse_document_object(dict(record), number)
        elif isinstance(record, (str, bytes, bytearray)):
            line = record.encode("utf-8", errors="surrogateescape") if isinstance(record, str) else bytes(record)
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield parse_document_line(line, number)
        else:
            raw = orjson.dumps(record, default=repr)
            yield BadRecord(number, raw, f"not a JSON object or line (found {type(record).__name__})")


@dataclass
class Model:
    """An encoder: texts in, L2-normalised float32 embeddings out."""

    encoder: Encoder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def checksum(self) -> str:
        return self.encoder.checksum

    @property
    def path(self) -> Path:
        return Path(self.encoder.model.path)

    def embed(self, texts: Sequence[str], role: str | None = "mention") -> np.ndarray:
        """(len(texts), dim) embeddings; `role` picks the prefix ("mention", "entity", or None for none),
        as `mel model embed --role` does. Long texts are truncated to the model's window."""
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} or None, not {role!r}")
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        return self.encoder.encode_texts(list(texts), role)


def load_model(model: str | os.PathLike | None = None, *, device: str = "auto", precision: str = "auto",
               threads: int | None = None, batch_size: int | None = None,
               announce: Callable[[str], None] | None = None) -> Model:
    """A model folder, or None/"default" for the offline default (built on first use)."""
    settings = EncoderSettings(model=None if model is None else str(model), device=device, precision=precision,
                               threads=threads, batch_size=batch_size)
    return Model(settings.open(resolve_model(settings.model, announce=announce)))


def open_index(path: str | os.PathLike, *, view: str | None = None, exact: bool | None = None,
               leaves_to_search: int | None = None, threads: int | None = None, verify: bool = True) -> Index:
    """An index folder opened for `search(vectors, k)` -> SearchResult (qids, scores, entry_ids).

    A linker index (`mel index build`) holds several views: `view` is "string" (labels and aliases, queried
    with mention strings) or "context" (descriptions and training contexts, queried with mentions in
    context); None takes the context view, or the index's only view. An older one-view index is that view."""
    folder = Path(path)
    if is_linker_index(folder):
        views = LinkerIndex.open(folder).view_folders
        if view is None:
            view = "context" if "context" in views else next(iter(views))
        if view not in views:
            raise InputError(f"{folder}: no {view!r} view (it has {', '.join(sorted(views))})")
        folder = views[view]
    elif view is not None and view not in VIEWS:
        raise InputError(f"view must be one of {', '.join(VIEWS)} or None, not {view!r}")
    return Index(folder, exact=exact, leaves_to_search=leaves_to_search, threads=threads, verify=verify,
                 verify_folder=path)
