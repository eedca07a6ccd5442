"""Link runs past one process: several inputs, `--shard I/N`, run folders, and `mel link merge`.

A *run folder* (format `mel.link-run.v1`) is what a sharded `mel link` and the Ray
engine write instead of one output file:

    OUT/manifest.json                     inputs, shard, link settings, counts, parts
    OUT/parts/part-IIIII-SSSSSSSSSSSS.jsonl[.zst]

A part file holds exactly the records `mel link` writes, unchanged, in input order
within the part. The manifest keys them: each part lists its *runs*,
`[input, first, count, first_line, last_line]`: `count` consecutive records of
input number `input`, starting at its record number `first` (records are the
non-blank lines, numbered from 0), which were lines `first_line` to `last_line`.
A part is named after its first record, so a task that is retried rewrites the
same part. Every input that the run read records its number of records, and
`mel link merge` checks that the runs of all the folders given cover every
record of every input exactly once before it writes anything, verifies each
part's sha256, and concatenates the runs in input order (`mel.link_merge`): the
merged file is the one `mel link` writes for the same inputs.

Sharding (`--shard I/N`, I from 0): with several inputs, input number j belongs to
shard j mod N; with one input, chunk c of `shard_docs` consecutive records (c = record
number // shard_docs) belongs to shard c mod N, and every shard reads the input
through (reading is cheap next to encoding).
"""

from __future__ import annotations

import datetime
import glob
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mel.artifacts import atomic_folder, command_line, read_json, sha256_file, tool_versions, write_json
from mel.documents import BadRecord, parse_document_line
from mel.errors import ArtifactError, InputError
from mel.linking import LinkedRecord, LinkOptions, LinkStats, link_chunks, stage_seconds
from mel.pipeline import StreamOutcome
from mel.rankers import Ranker
from mel.records import Document
from mel.streams import JsonlWriter, is_stdio, iter_lines

RUN_FORMAT = "mel.link-run.v1"
RUN_MANIFEST = "manifest.json"
PARTS = "parts"
DEFAULT_SHARD_DOCS = 10_000


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"--shard {text}: expected I/N, e.g. 0/4 (shard I of N, I from 0)") from None
        if count < 1 or not 0 <= index < count:
            raise InputError(f"--shard {text}: I must be 0 to N-1 and N at least 1")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_json(self) -> dict:
        return {"index": self.index, "count": self.count}

    @classmethod
    def from_json(cls, data: dict) -> Shard:
        return cls(int(data["index"]), int(data["count"]))


def expand_inputs(specs: Sequence[str], *, allow_uris: bool = False) -> list[str]:
    """Files, globs and folders (their files, sorted, not recursive, hidden ones left out) -> input paths.

    "-" (stdin) stands alone; URIs (s3://…) are kept as given where the engine reads them.
    """
    specs = list(specs) or ["-"]
    if any(is_stdio(spec) for spec in specs):
        if len(specs) > 1:
            raise InputError("- (stdin) cannot be combined with other inputs")
        return ["-"]
    out: list[str] = []
    for spec in specs:
        if "://" in spec:
            if not allow_uris:
                raise InputError(f"{spec}: URIs are read by --engine ray only; give a local path")
            out.append(spec)
        elif Path(spec).is_dir():
            found = sorted(str(p) for p in Path(spec).iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise InputError(f"{spec}: folder holds no input files")
            out.extend(found)
        elif any(ch in spec for ch in "*?["):
            found = sorted(p for p in glob.glob(spec) if Path(p).is_file())
            if not found:
                raise InputError(f"{spec}: no file matches")
            out.extend(found)
        elif not Path(spec).exists():
            raise InputError(f"{spec}: file not found")
        else:
            out.append(spec)
    seen: set[str] = set()
    for path in out:
        key = path if "://" in path else os.path.realpath(path)
        if key in seen:
            raise InputError(f"{path}: given twice")
        seen.add(key)
    return out


# -- the run folder ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInput:
    """An input of the run: its records (non-blank lines) and the line of the last one; both None where
    this run did not read it (another shard's input)."""

    path: str
    bytes: int | None
    records: int | None = None
    last_line: int | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "bytes": self.bytes, "records": self.records, "last_line": self.last_line}

    @classmethod
    def from_json(cls, data: dict) -> RunInput:
        return cls(str(data["path"]), data.get("bytes"), data.get("records"), data.get("last_line"))


def input_size(path: str) -> int | None:
    return None if "://" in path else Path(path).stat().st_size


@dataclass(frozen=True, order=True)
class Run:
    """`count` consecutive records of input `input`, from its record `first` (lines first_line..last_line)."""

    input: int
    first: int
    count: int
    first_line: int
    last_line: int

    def to_json(self) -> list[int]:
        return [self.input, self.first, self.count, self.first_line, self.last_line]

    @classmethod
    def from_json(cls, data: list) -> Run:
        return cls(*(int(v) for v in data))


@dataclass(frozen=True)
class PartRecord:
    name: str  # relative to the run folder
    sha256: str
    bytes: int
    records: int
    runs: tuple[Run, ...]
    errors: tuple[int, ...] = ()  # offsets (within the part) of the error records

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes, "records": self.records,
                "runs": [run.to_json() for run in self.runs], "errors": list(self.errors)}

    @classmethod
    def from_json(cls, data: dict) -> PartRecord:
        return cls(str(data["name"]), str(data["sha256"]), int(data["bytes"]), int(data["records"]),
                   tuple(Run.from_json(r) for r in data["runs"]), tuple(int(e) for e in data.get("errors", ())))


@dataclass(frozen=True)
class RunManifest:
    inputs: tuple[RunInput, ...]
    parts: tuple[PartRecord, ...]
    counts: dict[str, int]  # records, documents, mentions, linked, nil, errors
    link: dict  # method, index, model, top_k, min_score, min_prob, explain
    engine: str  # "local" or "ray"
    shard: Shard | None = None
    shard_docs: int | None = None  # records per chunk when one input is sharded
    error_examples: tuple[str, ...] = ()
    tool_versions: dict = field(default_factory=dict)
    command: str = ""
    created: str = ""
    format: str = RUN_FORMAT

    def to_json(self) -> dict:
        return {"format": self.format, "engine": self.engine,
                "shard": self.shard.to_json() if self.shard else None, "shard_docs": self.shard_docs,
                "inputs": [i.to_json() for i in self.inputs], "counts": self.counts,
                "error_examples": list(self.error_examples), "link": self.link,
                "parts": [p.to_json() for p in self.parts], "tool_versions": self.tool_versions,
                "command": self.command, "created": self.created}

    @classmethod
    def from_json(cls, data: dict) -> RunManifest:
        return cls(inputs=tuple(RunInput.from_json(i) for i in data["inputs"]),
                   parts=tuple(PartRecord.from_json(p) for p in data["parts"]), counts=dict(data["counts"]),
                   link=dict(data["link"]), engine=str(data["engine"]),
                   shard=Shard.from_json(data["shard"]) if data.get("shard") else None,
                   shard_docs=data.get("shard_docs"), error_examples=tuple(data.get("error_examples", ())),
                   tool_versions=dict(data.get("tool_versions", {})), command=str(data.get("command", "")),
                   created=str(data.get("created", "")), format=str(data["format"]))


def counts_of(stats: LinkStats) -> dict[str, int]:
    return {"records": stats.documents + stats.errors, "documents": stats.documents, "mentions": stats.mentions,
            "linked": stats.linked, "nil": stats.nil, "errors": stats.errors}


def write_run_manifest(folder: Path, *, inputs: Sequence[RunInput], parts: Sequence[PartRecord], stats: LinkStats,
                       link: dict, engine: str, shard: Shard | None = None, shard_docs: int | None = None
                       ) -> RunManifest:
    """Check that the parts hold every record the run owns exactly once, then write the manifest."""
    problems = coverage_problems(inputs, parts, shard, shard_docs)
    if problems:
        raise ArtifactError(f"{folder}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if problems[1:] else ""))
    manifest = RunManifest(
        inputs=tuple(inputs), parts=tuple(sorted(parts, key=lambda p: p.name)), counts=counts_of(stats), link=link,
        engine=engine, shard=shard, shard_docs=shard_docs, error_examples=tuple(stats.error_lines),
        tool_versions=tool_versions(), command=command_line(),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    write_json(folder / RUN_MANIFEST, manifest.to_json())
    return manifest


def read_run(folder: str | os.PathLike) -> RunManifest:
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: run folder not found")
    path = folder / RUN_MANIFEST
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise ArtifactError(f"{path}: not a mel link run manifest (expected format {RUN_FORMAT!r})")
    try:
        return RunManifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None


def owned_records(records: int, shard: Shard | None = None, shard_docs: int | None = None
                  ) -> list[tuple[int, int]]:
    """The records of an input that a run holds, as [first, end) ranges: all of them, or one shard's
    chunks of one input (`shard_docs` records a chunk)."""
    if shard is None or shard_docs is None:
        return [(0, records)] if records else []
    chunks = range(shard.index, -(-records // shard_docs), shard.count)
    return [(c * shard_docs, min(records, (c + 1) * shard_docs)) for c in chunks]


def _merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        elif hi > lo:
            out.append((lo, hi))
    return out


def coverage_problems(inputs: Sequence[RunInput], parts: Sequence[PartRecord], shard: Shard | None = None,
                      shard_docs: int | None = None) -> list[str]:
    """What keeps the parts from holding each record that the run owns exactly once (empty: nothing).

    A run owns every record of each input it read through, or, for one shard of a single input, that
    shard's chunks (`owned_records`)."""
    problems = []
    by_input: dict[int, list[tuple[Run, str]]] = {}
    for part in parts:
        if sum(run.count for run in part.runs) != part.records:
            problems.append(f"{part.name}: its runs hold {sum(r.count for r in part.runs)} records, "
                            f"the part {part.records}")
        for run in part.runs:
            if not 0 <= run.input < len(inputs):
                problems.append(f"{part.name}: a run of input number {run.input}, which the run does not have")
            else:
                by_input.setdefault(run.input, []).append((run, part.name))
    for number, source in enumerate(inputs):
        found = sorted(by_input.get(number, []))
        if source.records is None:
            if found:
                problems.append(f"{source.path}: records in {found[0][1]}, but no run read the input through")
            continue
        held: list[tuple[int, int]] = []
        for run, name in found:
            if held and run.first < held[-1][1]:
                problems.append(f"{source.path}: record {run.first} is in two parts (one is {name})")
            held.append((run.first, run.first + run.count))
        have, want = _merged(held), _merged(owned_records(source.records, shard, shard_docs))
        if have != want and not problems:
            missing = _first_difference(want, have)
            extra = _first_difference(have, want)
            if missing is not None:
                problems.append(f"{source.path}: record {missing} is in no part")
            if extra is not None:
                problems.append(f"{source.path}: record {extra} is in a part but not in the input's "
                                f"{source.records} records (or not this shard's)")
    return problems


def _first_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int | None:
    """The first number inside the ranges `a` but outside the ranges `b`."""
    for lo, hi in a:
        at = lo
        for blo, bhi in b:
            if blo <= at < bhi:
                at = bhi
        if at < hi:
            return at
    return None


class PartWriter:
    """Writes one part: output records with their keys (input, record number, line), runs tracked."""

    def __init__(self, folder: Path, input_number: int, first: int, compress: bool = False):
        self.name = f"{PARTS}/part-{input_number:05d}-{first:012d}.jsonl" + (".zst" if compress else "")
        self.path = Path(folder) / self.name
        self._writer = JsonlWriter(self.path)
        self._runs: list[list[int]] = []
        self._errors: list[int] = []
        self.records = 0

    def add(self, input_number: int, record: int, line: int, linked: LinkedRecord | bytes,
            error: bool = False) -> None:
        last = self._runs[-1] if self._runs else None
        if last is not None and last[0] == input_number and last[1] + last[2] == record:
            last[2] += 1
            last[4] = line
        else:
            self._runs.append([input_number, record, 1, line, line])
        if isinstance(linked, LinkedRecord):
            error = linked.error is not None
            self._writer.write(linked.line)
        else:
            self._writer.write(linked)
        if error:
            self._errors.append(self.records)
        self.records += 1

    def close(self) -> PartRecord:
        self._writer.close()
        return PartRecord(self.name, sha256_file(self.path), self.path.stat().st_size, self.records,
                          tuple(Run(*run) for run in self._runs), tuple(self._errors))

    def abort(self) -> None:
        self._writer.abort()


# -- a sharded run without an engine ----------------------------------------------------------------------


@dataclass
class RunStats:
    """What a run folder's link did (LinkStats for the summary and the exit status) and its manifest."""

    stats: LinkStats
    manifest: RunManifest


def _records(path: str) -> Iterator[tuple[int, int, bytes]]:
    """(record number, line number, line) of every non-blank line."""
    number = 0
    for line_no, line in iter_lines(path):
        if line.strip():
            yield number, line_no, line
            number += 1


def link_shard(inputs: Sequence[str], ranker: Ranker, out_dir: str | os.PathLike, shard: Shard, *,
               options: LinkOptions = LinkOptions(), describe: dict | None = None, force: bool = False,
               compress: bool = False, shard_docs: int = DEFAULT_SHARD_DOCS,
               progress: Callable[[LinkStats], None] | None = None) -> RunStats:
    """`mel link INPUTS --shard I/N -o OUT`: link this shard's records into the run folder OUT."""
    if any(is_stdio(p) for p in inputs):
        raise InputError("--shard needs input files (every shard reads the same inputs), not stdin")
    if shard_docs < 1:
        raise ValueError("shard_docs must be at least 1")
    by_file = len(inputs) > 1
    sources = [RunInput(path, input_size(path)) for path in inputs]
    keys: deque[tuple[int, int, int]] = deque()  # (input, record, line) of each item, in stream order

    def items() -> Iterator[Document | BadRecord]:
        for number, path in enumerate(inputs):
            if by_file and number % shard.count != shard.index:
                continue
            count = lines = 0
            name = path if by_file else None
            for count, lines, line in _records(path):
                if by_file or (count // shard_docs) % shard.count == shard.index:
                    keys.append((number, count, lines))
                    yield parse_document_line(line, lines, name)
                count += 1
            sources[number] = RunInput(path, sources[number].bytes, count, lines)

    stats = LinkStats(max_error_lines=options.max_error_lines)
    outcome = StreamOutcome()
    started = time.perf_counter()
    parts: list[PartRecord] = []
    with atomic_folder(out_dir, force=force) as tmp:
        (tmp / PARTS).mkdir()
        part: PartWriter | None = None
        part_input = -1
        chunks = link_chunks(items(), ranker, options, outcome)
        try:
            for chunk in chunks:
                for linked in chunk:
                    number, record, line = keys.popleft()
                    if part is None or number != part_input:  # a part per input
                        if part is not None:
                            parts.append(part.close())
                        part, part_input = PartWriter(tmp, number, record, compress), number
                    part.add(number, record, line, linked)
                    stats.add(linked)
                if progress:
                    progress(stats)
            if part is not None:
                parts.append(part.close())
        except BaseException:
            if part is not None:
                part.abort()
            raise
        finally:
            chunks.close()
        manifest = write_run_manifest(tmp, inputs=sources, parts=parts, stats=stats, link=describe or {},
                                      engine="local", shard=shard, shard_docs=None if by_file else shard_docs)
    stats.seconds = time.perf_counter() - started
    stats.stage_seconds.update(stage_seconds(ranker, outcome))
    return RunStats(stats, manifest)
