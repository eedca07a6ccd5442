"""`mel link merge RUN... -o FILE`: the run folders of a sharded or Ray `mel link` (`mel.link_runs`), in input order.

`combine_runs` checks that the folders given belong together (the same inputs and link settings; every
shard of one `--shard I/N` run exactly once, or one unsharded run) and that their runs cover every record
of every input exactly once; `merge_runs` then verifies each part's sha256 and concatenates the runs in
input order: the merged file is the one `mel link` writes for the same inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mel.artifacts import sha256_file
from mel.errors import ArtifactError, InputError
from mel.link_runs import PartRecord, Run, RunInput, coverage_problems, read_run
from mel.streams import JsonlWriter, iter_lines


def _comparable(link: dict) -> dict:
    """The link settings that must agree between the runs merged (paths may differ between machines)."""
    index = link.get("index") or {}
    model = link.get("model") or {}
    return {"method": link.get("method"), "top_k": link.get("top_k"), "min_score": link.get("min_score"),
            "min_prob": link.get("min_prob"), "explain": link.get("explain"),
            "index": index.get("manifest_sha256"), "model": model.get("checksum"),
            "precision": model.get("precision"), "aliases": (link.get("aliases") or {}).get("manifest_sha256")}


def combine_runs(folders: Sequence[str | os.PathLike]) -> tuple[list[RunInput], list[tuple[Path, PartRecord]]]:
    """The inputs and parts of the run folders given (the shards of one run, or one unsharded run), checked
    to belong together and to hold every record exactly once."""
    if not folders:
        raise InputError("give at least one run folder")
    manifests = [(Path(f), read_run(f)) for f in folders]
    first_folder, first = manifests[0]
    for folder, manifest in manifests[1:]:
        if [(i.path, i.bytes) for i in manifest.inputs] != [(i.path, i.bytes) for i in first.inputs]:
            raise InputError(f"{folder}: linked other inputs than {first_folder} (not shards of one run)")
        if _comparable(manifest.link) != _comparable(first.link):
            raise InputError(f"{folder}: linked with other settings than {first_folder} (method, index, model, "
                             "--top-k, --min-score, --min-prob or --explain differ)")
    shards = [m.shard for _, m in manifests]
    if any(s is not None for s in shards):
        counts = {s.count if s else None for s in shards}
        if len(counts) != 1 or None in counts:
            raise InputError("the run folders are not shards of one --shard I/N run (N differs, or one is unsharded)")
        seen = sorted(s.index for s in shards if s is not None)
        count = shards[0].count if shards[0] else 1
        if seen != list(range(count)):
            missing = sorted(set(range(count)) - set(seen))
            twice = sorted({i for i in seen if seen.count(i) > 1})
            raise InputError(f"shards {'missing: ' + ', '.join(f'{i}/{count}' for i in missing) if missing else ''}"
                             f"{'given twice: ' + ', '.join(f'{i}/{count}' for i in twice) if twice else ''}")
    elif len(manifests) > 1:
        raise InputError("several unsharded run folders: merge takes one run, or every shard of one run")
    inputs: list[RunInput] = []
    for number, source in enumerate(first.inputs):
        read: set[int] = {r for _, m in manifests if (r := m.inputs[number].records) is not None}
        if len(read) > 1:
            raise InputError(f"{source.path}: the shards read different numbers of records ({sorted(read)})")
        lines = next((m.inputs[number].last_line for _, m in manifests if m.inputs[number].records is not None),
                     None)
        inputs.append(RunInput(source.path, source.bytes, read.pop() if read else None, lines))
    for source in inputs:
        if source.records is None:
            raise InputError(f"{source.path}: read by none of the run folders given (a shard is missing)")
    parts = [(folder, part) for folder, m in manifests for part in m.parts]
    problems = coverage_problems(inputs, [part for _, part in parts])
    if problems:
        raise ArtifactError(problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else ""))
    return inputs, parts


@dataclass
class MergeStats:
    records: int = 0
    errors: int = 0
    parts: int = 0
    inputs: int = 0
    broken_pipe: bool = False


def merge_runs(folders: Sequence[str | os.PathLike], output: str = "-", *, errors_path: str | None = None
               ) -> MergeStats:
    """`mel link merge RUN... -o FILE`: the records of every part, in input order, into one file."""
    inputs, parts = combine_runs(folders)
    for folder, part in parts:  # checked before anything is trusted
        path = folder / part.name
        if not path.is_file():
            raise ArtifactError(f"{path}: part file not found (the run folder is incomplete)")
        if path.stat().st_size != part.bytes or sha256_file(path) != part.sha256:
            raise ArtifactError(f"{path}: checksum mismatch (the part is damaged)")
    order = sorted((run.input, run.first, i, offset) for i, (_, part) in enumerate(parts)
                   for run, offset in zip(part.runs, _offsets(part.runs)))
    remaining = [len(part.runs) for _, part in parts]
    error_offsets = [set(part.errors) for _, part in parts]
    readers: dict[int, Iterator[tuple[int, bytes]]] = {}
    stats = MergeStats(parts=len(parts), inputs=len(inputs))
    errors = JsonlWriter(errors_path) if errors_path else None
    try:
        with JsonlWriter(output) as writer:
            for input_number, first, i, offset in order:
                if stats.broken_pipe:
                    break
                folder, part = parts[i]
                run = next(r for r in part.runs if r.input == input_number and r.first == first)
                reader = readers.setdefault(i, iter_lines(folder / part.name))
                for k in range(run.count):
                    got = next(reader, None)
                    if got is None:
                        raise ArtifactError(f"{folder / part.name}: fewer records than its manifest says")
                    is_error = offset + k in error_offsets[i]
                    stats.records += 1
                    stats.errors += is_error
                    target = errors if errors is not None and is_error else writer
                    if not target.write(got[1]):
                        stats.broken_pipe = True
                        break
                remaining[i] -= 1
                if remaining[i] == 0:
                    readers.pop(i, None)
        if errors is not None:
            errors.close()
    except BaseException:
        if errors is not None:
            errors.abort()
        raise
    stats.broken_pipe = stats.broken_pipe or writer.broken_pipe
    return stats


def _offsets(runs: Sequence[Run]) -> list[int]:
    out, at = [], 0
    for run in runs:
        out.append(at)
        at += run.count
    return out
