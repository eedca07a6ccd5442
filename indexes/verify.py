"""Checking an index folder (`verify`) and describing it (`info`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mel.artifacts import folder_size
from mel.errors import ArtifactError, MelError
from mel.indexes.integrity import check_file, check_vectors_file
from mel.indexes.manifest import MANIFEST_FILE, read_manifest
from mel.indexes.scann_backend import find_pickles, scann_available
from mel.indexes.searcher import Index


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found. `problems` are one-line messages naming a file.

    `model_checksum` is the manifest's; the caller that has the model folder
    sets `model_ok` (dataclasses.replace) after comparing it.
    """

    folder: str
    files_checked: int
    bytes_checked: int
    problems: tuple[str, ...]
    sample: int  # stored vectors used as queries for the recall check
    recall_at_10: float | None  # ScaNN vs exact; None when not measured
    exact_only: bool  # the index has no ScaNN searchers (or ScaNN is not installed)
    model_checksum: str | None = None
    model_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.model_ok is not False

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["problems"] = list(self.problems)
        data["ok"] = self.ok
        return data

    @classmethod
    def from_json(cls, data: dict) -> VerifyReport:
        fields = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values["problems"] = tuple(values.get("problems", ()))
        return cls(**values)


def _recall_at_10(index: Index, sample: int, seed: int) -> tuple[int, float]:
    rng = np.random.default_rng(seed)
    count = min(sample, len(index))
    entry_ids = np.sort(rng.choice(len(index), size=count, replace=False))
    queries = index.vectors(entry_ids)
    k = min(10, index.num_qids)
    approximate = index.search(queries, k, exact=False).qids
    exact = index.search(queries, k, exact=True).qids
    hits = [np.intersect1d(a[a >= 0], e[e >= 0]).size / max(1, (e >= 0).sum()) for a, e in zip(approximate, exact)]
    return count, float(np.mean(hits)) if hits else 1.0


def verify(
    folder: str | os.PathLike, sample: int = 1000, *, seed: int = 0, min_recall: float | None = None
) -> VerifyReport:
    """Check every file's checksum, then measure recall@10 of ScaNN vs exact search.

    A missing or unreadable manifest raises ArtifactError; everything else
    is reported in `problems`.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems: list[str] = [f"{path}: pickle file in the index (never loaded)" for path in find_pickles(folder)]
    listed = {folder / name: (record, None) for name, record in manifest.files.items()}
    for shard in manifest.shards:
        vectors = folder / shard.name / shard.vectors
        listed.update({folder / shard.name / name: (record, shard if folder / shard.name / name == vectors else None)
                       for name, record in shard.files.items()})
    checked = checked_bytes = 0
    for path, (record, vectors_of) in listed.items():
        if not path.is_file():
            problems.append(f"{path}: file missing")
            continue
        checked += 1
        checked_bytes += path.stat().st_size
        try:
            if vectors_of is not None:  # also every row: finite and of unit length
                check_vectors_file(path, record, vectors_of.entries, manifest.dim)
            else:
                check_file(path, record)
        except ArtifactError as exc:
            problems.append(str(exc))
    known = set(listed) | {folder / MANIFEST_FILE}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path not in known and path.suffix.lower() not in (".pkl", ".pickle"):
            problems.append(f"{path}: file not listed in the manifest")

    model = manifest.model if isinstance(manifest.model, dict) else {}
    exact_only = not scann_available() or not all(shard.search.uses_scann for shard in manifest.shards)
    recall, used = None, 0
    if not problems:
        try:
            index = Index(folder, verify=False)  # just checked; this checks the tables' values
            if not exact_only and sample > 0:
                used, recall = _recall_at_10(index, sample, seed)
        except MelError as exc:
            problems.append(str(exc))
        else:
            if recall is not None and min_recall is not None and recall < min_recall:
                problems.append(f"{folder}: recall@10 of ScaNN vs exact search is {recall:.3f}, below {min_recall}")
    return VerifyReport(
        folder=str(folder),
        files_checked=checked,
        bytes_checked=checked_bytes,
        problems=tuple(problems),
        sample=used,
        recall_at_10=recall,
        exact_only=exact_only,
        model_checksum=model.get("checksum"),
    )


@dataclass(frozen=True)
class ShardInfo:
    name: str
    entries: int
    algorithm: str
    num_leaves: int
    leaves_to_search: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class IndexInfo:
    """What `mel index info` shows."""

    folder: str
    format: str
    dim: int
    entries: int
    qids: int
    kinds: dict[str, int]  # entries per kind
    languages: dict[str, int]  # entries per language
    by_kind_language: dict[str, dict[str, int]]
    shards: tuple[ShardInfo, ...]
    model: dict | None
    query_encoding: str | None
    extra: dict  # every caller field, model and query_encoding included
    settings: dict
    size_bytes: int
    tool_versions: dict[str, str]
    command: str
    created: str

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["shards"] = [shard.to_json() for shard in self.shards]
        return data


def info(folder: str | os.PathLike) -> IndexInfo:
    folder = Path(folder)
    manifest = read_manifest(folder)
    counts = manifest.counts
    return IndexInfo(
        folder=str(folder),
        format=manifest.format,
        dim=manifest.dim,
        entries=counts.entries,
        qids=counts.qids,
        kinds=counts.by_kind,
        languages=counts.by_language,
        by_kind_language=counts.by_kind_language,
        shards=tuple(
            ShardInfo(shard.name, shard.entries, shard.search.algorithm, shard.search.num_leaves,
                      shard.search.leaves_to_search)
            for shard in manifest.shards
        ),
        model=manifest.model,
        query_encoding=manifest.extra.get("query_encoding"),
        extra=manifest.extra,
        settings=manifest.settings.to_json(),
        size_bytes=folder_size(folder),
        tool_versions=manifest.tool_versions,
        command=manifest.command,
        created=manifest.created,
    )
