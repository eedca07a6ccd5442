"""A linker index (format `mel.index.v2`): several views and tables in one folder.

    manifest.json        format, the model, each part with the sha256 of its own manifest,
                         counts, the command, tool versions
    views/string/        a mel.index.v1 index of label and alias entries, queried by the
                         mention string (entry labels are the names themselves)
    views/context/       a mel.index.v1 index of description (and training-context) entries,
                         queried by the mention in its context window
    tables/names/        the KB's own names (loosely normalised) -> entities (mel.aliases.v1)
    tables/initials/     the initials of those names ("uk" for "united kingdom") -> entities,
                         for mentions written as acronyms (mel.aliases.v1; mel.initials)
    tables/aliases/      training links: alias -> entities with counts, P(entity | alias)
    reranker.json        the fitted reranker and calibration (`mel index tune`); without it,
                         the default shipped with mel is used

Every part is optional but one view. An older single-view index (`mel.index.v1`) opens
as a linker index with that one view. Part paths are fixed names inside the folder; the
manifest ties each part to the folder by its manifest's sha256, so a part swapped for
another is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mel.aliases import AliasTable
from mel.artifacts import read_json, sha256_file
from mel.errors import ArtifactError
from mel.indexes.manifest import FORMAT as VIEW_FORMAT
from mel.indexes.manifest import MANIFEST_FILE, QUERY_ENCODINGS, read_manifest

FORMAT = "mel.index.v2"
VIEWS = {"string": "string", "context": "context"}  # view name -> its query encoding
TABLES = ("names", "initials", "aliases")
RERANKER_FILE = "reranker.json"


def view_path(folder: Path, view: str) -> Path:
    return folder / "views" / view


def table_path(folder: Path, table: str) -> Path:
    return folder / "tables" / table


@dataclass(frozen=True)
class LinkerManifest:
    """The parts of a linker index; `parts` maps "views/string" etc. to their manifest sha256."""

    folder: Path
    views: tuple[str, ...]
    tables: tuple[str, ...]
    parts: dict[str, str]
    reranker_sha256: str | None
    data: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> dict:
        return self.data.get("model") or {}


def is_linker_index(folder: str | os.PathLike) -> bool:
    manifest = Path(folder) / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        data = read_json(manifest)
    except ArtifactError:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_linker_manifest(folder: str | os.PathLike, *, check_parts: bool = True) -> LinkerManifest:
    """The manifest of a v2 index; with `check_parts`, each part's manifest must still hash as recorded."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ArtifactError(f"{path}: not a linker index (format {found!r})")
    views = tuple(v for v in data.get("views", ()) if isinstance(v, str))
    tables = tuple(t for t in data.get("tables", ()) if isinstance(t, str))
    unknown = [v for v in views if v not in VIEWS] + [t for t in tables if t not in TABLES]
    if unknown or not views:
        problem = "unknown parts " + ", ".join(unknown) if unknown else "no view"
        raise ArtifactError(f"{path}: field 'views'/'tables': {problem}")
    parts = data.get("parts")
    if not isinstance(parts, dict):
        raise ArtifactError(f"{path}: field 'parts' must map each part to its manifest's sha256")
    expected = {f"views/{v}" for v in views} | {f"tables/{t}" for t in tables}
    if set(parts) != expected:
        raise ArtifactError(f"{path}: field 'parts' lists {sorted(parts)}, the views and tables need "
                            f"{sorted(expected)}")
    if check_parts:
        for name, digest in parts.items():
            part = folder / name / MANIFEST_FILE
            if not part.is_file():
                raise ArtifactError(f"{part}: file not found (the index is incomplete)")
            if sha256_file(part) != digest:
                raise ArtifactError(f"{part}: checksum mismatch with {path} (a part was replaced or changed)")
    reranker = data.get("reranker")
    digest = reranker.get("sha256") if isinstance(reranker, dict) else None
    if check_parts and digest is not None:
        file = folder / RERANKER_FILE
        if not file.is_file() or sha256_file(file) != digest:
            raise ArtifactError(f"{file}: missing or changed (checksum mismatch with {path}); tune again")
    return LinkerManifest(folder, views, tables, dict(parts), digest, data)


@dataclass
class LinkerIndex:
    """A linker index opened for reading: view folders (searched by mel.indexes) and tables."""

    folder: Path
    manifest: LinkerManifest | None  # None: an old single-view index
    view_folders: dict[str, Path]
    tables: dict[str, AliasTable]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> LinkerIndex:
        folder = Path(folder)
        if not folder.is_dir():
            raise ArtifactError(f"{folder}: index folder not found")
        if not is_linker_index(folder):
            single = read_manifest(folder)  # a v1 index: one view, named by how it is queried
            encoding = single.extra.get("query_encoding", "context")
            if encoding not in QUERY_ENCODINGS:
                raise ArtifactError(f"{folder}/{MANIFEST_FILE}: unknown query_encoding {encoding!r}")
            return cls(folder, None, {encoding: folder}, {})
        manifest = read_linker_manifest(folder)
        views = {view: view_path(folder, view) for view in manifest.views}
        for view, path in views.items():
            found = read_manifest(path)
            encoding = found.extra.get("query_encoding")
            if encoding != VIEWS[view]:
                raise ArtifactError(f"{path}/{MANIFEST_FILE}: query_encoding {encoding!r}, the {view} view needs "
                                    f"{VIEWS[view]!r}")
            if found.format != VIEW_FORMAT:
                raise ArtifactError(f"{path}/{MANIFEST_FILE}: format {found.format!r} is not {VIEW_FORMAT!r}")
        tables = {table: AliasTable.open(table_path(folder, table)) for table in manifest.tables}
        return cls(folder, manifest, views, tables)

    @property
    def reranker_path(self) -> Path | None:
        if self.manifest is None or self.manifest.reranker_sha256 is None:
            return None
        return self.folder / RERANKER_FILE
