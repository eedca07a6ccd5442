"""The index manifest (`manifest.json`, format `mel.index.v1`).

    {
      "format": "mel.index.v1", "dim": 384, "metric": "dot_product",
      "kinds": ["description", "context", "label"], "languages": ["es", "en"],
      "counts": {"entries": ..., "qids": ..., "by_kind": {...}, "by_language": {...},
                 "by_kind_language": {"description": {"es": ...}}},
      "files": {"qids.npy": {"sha256": ..., "bytes": ...}},
      "shards": [{"name": "shard-00000", "first_entry": 0, "entries": ...,
                  "vectors": "scann/dataset.npy", "search": {ScaNN config},
                  "counts": {kind: {lang: n}}, "files": {relative path: {"sha256", "bytes"}}}],
      "settings": {...}, "tool_versions": {...}, "command": "mel index build ...",
      "created": "2025-01-01T00:00:00Z",
      ...caller fields passed as `extra`, e.g. "model": {...}, "query_encoding": "context"
    }
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mel.artifacts import read_json, sha256_file
from mel.errors import ArtifactError
from mel.indexes.integrity import check_name, inside
from mel.indexes.settings import IndexSettings, ShardSearchConfig

FORMAT = "mel.index.v1"
MANIFEST_FILE = "manifest.json"
QID_SET_FILE = "qids.npy"  # sorted distinct QIDs of the whole index
# Entry kinds, and how a query must be encoded to search each: the mention in its
# context window, or the mention string alone (docs/formats.md).
KINDS = ("description", "context", "label")
QUERY_ENCODINGS = ("context", "string")
QUERY_ENCODING_OF_KIND = {"description": "context", "context": "context", "label": "string"}
METRIC = "dot_product"
# The files every shard holds (its vectors file too, named by the shard record).
SHARD_TABLES = ("qids.npy", "kinds.npy", "langs.npy", "labels.json")
SCANN_FILES = ("scann/scann_assets.pbtxt", "scann/scann_config.pb")  # and the assets the first names
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data: dict) -> FileRecord:
        digest, size = data["sha256"], data["bytes"]
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"sha256 {digest!r} is not 64 hexadecimal digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"bytes {size!r} is not a size")
        return cls(digest, size)


def _files_to_json(files: dict[str, FileRecord]) -> dict:
    return {name: record.to_json() for name, record in sorted(files.items())}


def _files_from_json(data: dict) -> dict[str, FileRecord]:
    return {name: FileRecord.from_json(record) for name, record in data.items()}


@dataclass(frozen=True)
class ShardRecord:
    name: str
    first_entry: int
    entries: int
    vectors: str  # path of the float32 vectors inside the shard folder
    search: ShardSearchConfig
    counts: dict[str, dict[str, int]]  # kind -> language -> entries
    files: dict[str, FileRecord]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "first_entry": self.first_entry,
            "entries": self.entries,
            "vectors": self.vectors,
            "search": self.search.to_json(),
            "counts": self.counts,
            "files": _files_to_json(self.files),
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardRecord:
        return cls(
            name=str(data["name"]),
            first_entry=int(data["first_entry"]),
            entries=int(data["entries"]),
            vectors=str(data["vectors"]),
            search=ShardSearchConfig.from_json(data["search"]),
            counts={kind: {lang: int(n) for lang, n in by_lang.items()} for kind, by_lang in data["counts"].items()},
            files=_files_from_json(data["files"]),
        )


@dataclass(frozen=True)
class IndexCounts:
    entries: int
    qids: int
    by_kind: dict[str, int]
    by_language: dict[str, int]
    by_kind_language: dict[str, dict[str, int]]

    @classmethod
    def from_shards(cls, shards: list[ShardRecord] | tuple[ShardRecord, ...], qids: int) -> IndexCounts:
        by_kind_language: dict[str, dict[str, int]] = {}
        for shard in shards:
            for kind, by_lang in shard.counts.items():
                target = by_kind_language.setdefault(kind, {})
                for lang, n in by_lang.items():
                    target[lang] = target.get(lang, 0) + n
        by_kind = {kind: sum(by_lang.values()) for kind, by_lang in by_kind_language.items()}
        by_language: dict[str, int] = {}
        for by_lang in by_kind_language.values():
            for lang, n in by_lang.items():
                by_language[lang] = by_language.get(lang, 0) + n
        entries = sum(shard.entries for shard in shards)
        return cls(entries, qids, by_kind, dict(sorted(by_language.items())), by_kind_language)

    def to_json(self) -> dict:
        return {
            "entries": self.entries,
            "qids": self.qids,
            "by_kind": self.by_kind,
            "by_language": self.by_language,
            "by_kind_language": self.by_kind_language,
        }

    @classmethod
    def from_json(cls, data: dict) -> IndexCounts:
        return cls(
            int(data["entries"]),
            int(data["qids"]),
            dict(data["by_kind"]),
            dict(data["by_language"]),
            {kind: dict(by_lang) for kind, by_lang in data["by_kind_language"].items()},
        )


_CORE_KEYS = (
    "format", "dim", "metric", "kinds", "languages", "counts", "files", "shards",
    "settings", "tool_versions", "command", "created",
)  # fmt: skip


@dataclass(frozen=True)
class IndexManifest:
    dim: int
    kinds: tuple[str, ...]
    languages: tuple[str, ...]
    counts: IndexCounts
    files: dict[str, FileRecord]
    shards: tuple[ShardRecord, ...]
    settings: IndexSettings
    tool_versions: dict[str, str]
    command: str
    created: str
    extra: dict = field(default_factory=dict)  # caller fields: model, query_encoding, ...
    format: str = FORMAT
    metric: str = METRIC

    @property
    def model(self) -> dict | None:
        return self.extra.get("model")

    def to_json(self) -> dict:
        data = {
            "format": self.format,
            "dim": self.dim,
            "metric": self.metric,
            "kinds": list(self.kinds),
            "languages": list(self.languages),
            "counts": self.counts.to_json(),
            "files": _files_to_json(self.files),
            "shards": [shard.to_json() for shard in self.shards],
            "settings": self.settings.to_json(),
            "tool_versions": self.tool_versions,
            "command": self.command,
            "created": self.created,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict) -> IndexManifest:
        return cls(
            dim=int(data["dim"]),
            kinds=tuple(data["kinds"]),
            languages=tuple(data["languages"]),
            counts=IndexCounts.from_json(data["counts"]),
            files=_files_from_json(data["files"]),
            shards=tuple(ShardRecord.from_json(shard) for shard in data["shards"]),
            settings=IndexSettings.from_json(data["settings"]),
            tool_versions=dict(data["tool_versions"]),
            command=str(data["command"]),
            created=str(data["created"]),
            extra={key: value for key, value in data.items() if key not in _CORE_KEYS},
            format=str(data["format"]),
            metric=str(data["metric"]),
        )


def file_records(folder: Path, skip: set[str]) -> dict[str, FileRecord]:
    """Checksum and size of every file under `folder` (relative POSIX paths)."""
    records = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in skip:
            records[name] = FileRecord(sha256_file(path), path.stat().st_size)
    return records


def files_match(folder: Path, files: dict[str, FileRecord]) -> bool:
    """Whether every listed file exists with its recorded size and checksum."""
    for name, record in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != record.bytes or sha256_file(path) != record.sha256:
            return False
    return True


def check_extra(extra: dict) -> dict:
    """Caller fields go at the top level of the manifest; they may not shadow ours."""
    clash = sorted(set(extra) & set(_CORE_KEYS))
    if clash:
        raise ValueError(f"extra manifest fields {clash} clash with the index's own fields")
    return dict(extra)


def read_manifest(folder: str | Path) -> IndexManifest:
    """Read and check an index manifest; ArtifactError naming the file otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: index folder not found")
    if not path.exists():
        raise ArtifactError(f"{folder}: not a mel index (no {MANIFEST_FILE} in it)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: not an index manifest (expected a JSON object)")
    found = data.get("format")
    if found != FORMAT:
        raise ArtifactError(f"{path}: unsupported index format {found!r} (this mel reads {FORMAT!r})")
    try:
        manifest = IndexManifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    if manifest.metric != METRIC:
        raise ArtifactError(f"{path}: unsupported metric {manifest.metric!r}")
    if manifest.dim < 1 or len(set(manifest.kinds)) != len(manifest.kinds) or not set(manifest.kinds) <= set(KINDS) \
            or not all(isinstance(lang, str) and lang for lang in manifest.languages):
        raise ArtifactError(f"{path}: dim, kinds or languages are malformed")
    encoding = manifest.extra.get("query_encoding")
    if encoding is not None and encoding not in QUERY_ENCODINGS:
        raise ArtifactError(f"{path}: unknown query_encoding {encoding!r} (this mel knows "
                            f"{', '.join(QUERY_ENCODINGS)}); was the index made by a newer mel?")
    _check_names(folder, path, manifest)
    expected_first = 0
    for shard in manifest.shards:
        if shard.first_entry != expected_first or shard.search.entries != shard.entries or shard.entries < 1:
            raise ArtifactError(f"{path}: shard {shard.name} entry counts are inconsistent")
        expected_first += shard.entries
    if expected_first != manifest.counts.entries:
        raise ArtifactError(f"{path}: shards hold {expected_first} entries, counts say {manifest.counts.entries}")
    return manifest


def _check_names(folder: Path, path: Path, manifest: IndexManifest) -> None:
    """Every name is a plain relative path that stays inside the folder, and every file
    search reads is listed (so that its checksum is checked)."""
    where = str(path)
    for name in manifest.files:
        inside(folder, check_name(name, where), where)
    if QID_SET_FILE not in manifest.files:
        raise ArtifactError(f"{path}: lists no checksum for {QID_SET_FILE}")
    seen = set()
    for shard in manifest.shards:
        shard_folder = inside(folder, check_name(shard.name, where), where)
        if shard.name in seen or shard.name in manifest.files:
            raise ArtifactError(f"{path}: shard name {shard.name!r} is used twice")
        seen.add(shard.name)
        for name in shard.files:
            inside(shard_folder, check_name(name, where), where)
        needed = (*SHARD_TABLES, check_name(shard.vectors, where), *(SCANN_FILES if shard.search.uses_scann else ()))
        unlisted = [name for name in needed if name not in shard.files]
        if unlisted:
            raise ArtifactError(f"{path}: shard {shard.name} lists no checksum for {', '.join(unlisted)}")
