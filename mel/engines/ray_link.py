"""`mel link --engine ray`: Ray Data reads the inputs, an actor pool of Linkers links, a datasink writes parts.

    read     one task per input (local path, or a URI read through pyarrow's filesystems,
             compression detected by content as everywhere in mel): blocks of `task_docs`
             rows (input, record, line, raw line), then one end-of-input row with the
             input's record count, so the driver can account for every line
    link     an actor pool (`workers` actors of `cpus_per_worker` CPUs and
             `gpus_per_worker` GPUs): each actor opens one Linker (model session and index,
             once) from `LinkerSettings` and links blocks through `Linker.link_items`
    write    a datasink: each write task writes one part of the run folder
             (`mel.link_runs`), named after its first record, so a task Ray retries
             rewrites the same part; the driver keeps the parts its write tasks reported,
             removes any other file, checks that every record of every input is in exactly
             one part, and writes the manifest

Order is not kept by Ray (it need not be): parts are keyed, and `mel link merge` restores
input order. An actor that dies is restarted by Ray and its block retried elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mel.api import LinkerSettings
from mel.artifacts import atomic_folder
from mel.documents import parse_document_line
from mel.engines.ray_cluster import import_ray, ray_cluster, unwrap_error
from mel.errors import InputError
from mel.link_runs import PARTS, PartRecord, PartWriter, RunInput, RunStats, input_size, write_run_manifest
from mel.linking import LinkStats
from mel.streams import iter_lines

RECORD, END = 0, 1  # row kinds: an input record; the end of an input (record = its record count)


@dataclass(frozen=True)
class RayOptions:
    workers: int | None = None  # default: the cluster's CPUs / cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    task_docs: int = 2_000
    address: str | None = None  # default: $RAY_ADDRESS, else a local cluster


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    if "://" not in path:
        yield from iter_lines(path)
        return
    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
    yield from iter_lines(path, filesystem.open_input_stream(inner, compression=None))


def _read_input(number: int, path: str, block_rows: int) -> Iterator[Any]:
    import pyarrow as pa

    def block(records, lines, raws, kind=RECORD):
        return pa.table({"input": pa.array([number] * len(records), pa.int32()),
                         "record": pa.array(records, pa.int64()), "line": pa.array(lines, pa.int64()),
                         "raw": pa.array(raws, pa.binary()), "kind": pa.array([kind] * len(records), pa.int8())})

    records: list[int] = []
    lines: list[int] = []
    raws: list[bytes] = []
    count, last = 0, 0
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        records.append(count)
        lines.append(line_no)
        raws.append(line)
        count, last = count + 1, line_no
        if len(records) == block_rows:
            yield block(records, lines, raws)
            records, lines, raws = [], [], []
    if records:
        yield block(records, lines, raws)
    yield block([count], [last], [b""], END)


def _datasource(inputs: list[str], block_rows: int):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class MelInputs(Datasource):
        """One read task per input: mel documents JSON Lines, keyed rows."""

        def estimate_inmemory_data_size(self) -> int | None:
            sizes = [input_size(path) for path in inputs]
            return None if None in sizes else sum(s or 0 for s in sizes)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            return [ReadTask(functools.partial(_read_input, number, path, block_rows),
                             BlockMetadata(num_rows=None, size_bytes=input_size(path), input_files=(path,),
                                           exec_stats=None))
                    for number, path in enumerate(inputs)]

    return MelInputs()


class LinkActor:
    """One Linker per actor; links blocks of keyed rows into keyed output lines."""

    def __init__(self, settings: LinkerSettings, names: list[str | None]):
        self.linker = settings.open()
        self.names = names

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        kinds = batch["kind"]
        rows = np.flatnonzero(kinds == RECORD)
        items = [parse_document_line(bytes(batch["raw"][i]), int(batch["line"][i]), self.names[batch["input"][i]])
                 for i in rows]
        n = len(kinds)
        out: list[bytes] = [b""] * n
        errors: list[str | None] = [None] * n
        mentions = np.zeros(n, dtype=np.int32)
        linked = np.zeros(n, dtype=np.int32)
        for i, result in zip(rows, self.linker.link_items(items)):
            out[i] = result.line
            errors[i] = result.error
            mentions[i], linked[i] = result.mentions, result.linked
        return {"input": batch["input"], "record": batch["record"], "line": batch["line"], "kind": kinds,
                "out": np.array(out, dtype=object), "error": np.array(errors, dtype=object),
                "mentions": mentions, "linked": linked}


def _sink(folder: str, compress: bool, max_error_lines: int):
    from ray.data import Datasink

    class RunSink(Datasink):
        """Each write task: one part of the run folder; the driver collects what they wrote."""

        def __init__(self) -> None:
            self.results: list[dict] = []

        def write(self, blocks: Iterable[Any], ctx: Any) -> dict:
            import pyarrow as pa

            tables = [b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks]
            table = pa.concat_tables(tables) if tables else None
            result: dict = {"part": None, "ends": [], "counts": [0, 0, 0, 0], "errors": []}
            if table is None or table.num_rows == 0:
                return result
            columns = {name: table.column(name).to_pylist() for name in table.column_names}
            order = sorted(range(table.num_rows), key=lambda i: (columns["input"][i], columns["kind"][i],
                                                                 columns["record"][i]))
            part: PartWriter | None = None
            counts = result["counts"]  # documents, mentions, linked, errors
            try:
                for i in order:
                    number, record, line = columns["input"][i], columns["record"][i], columns["line"][i]
                    if columns["kind"][i] == END:
                        result["ends"].append([number, record, line])
                        continue
                    if part is None:
                        part = PartWriter(Path(folder), number, record, compress)
                    error = columns["error"][i]
                    part.add(number, record, line, columns["out"][i], error=error is not None)
                    if error is not None:
                        counts[3] += 1
                        if len(result["errors"]) < max_error_lines:
                            result["errors"].append([number, record, error])
                    else:
                        counts[0] += 1
                        counts[1] += columns["mentions"][i]
                        counts[2] += columns["linked"][i]
                if part is not None:
                    result["part"] = part.close().to_json()
            except BaseException:
                if part is not None:
                    part.abort()
                raise
            return result

        def on_write_complete(self, write_result: Any) -> None:
            self.results = list(write_result.write_returns)

    return RunSink()


def _absolute(path: str | None) -> str | None:
    return None if path is None or "://" in path else str(Path(path).resolve())


def link_with_ray(inputs: list[str], settings: LinkerSettings, out_dir: str, options: RayOptions = RayOptions(), *,
                  compress: bool = False, force: bool = False,
                  announce: Callable[[str], None] | None = None) -> RunStats:
    """Link `inputs` on Ray Data into the run folder `out_dir` (see the module docstring)."""
    if any(path == "-" for path in inputs):
        raise InputError("--engine ray reads input files or URIs, not stdin")
    import_ray()
    inputs = [_absolute(path) or path for path in inputs]
    model = settings.encoder.model
    encoder = dataclasses.replace(settings.encoder, model=model if model in (None, "default") else _absolute(model))
    settings = dataclasses.replace(settings, index=_absolute(settings.index), aliases=_absolute(settings.aliases),
                                   encoder=encoder)
    linker = settings.open(announce)  # the index and model checked once, before any worker starts
    if announce is not None:
        for note in linker.notes:
            announce(note)
    describe = linker.describe()
    del linker
    names = [path if len(inputs) > 1 else None for path in inputs]
    started = time.perf_counter()
    try:
        with ray_cluster(options.address) as ray, atomic_folder(out_dir, force=force) as tmp:
            (tmp / PARTS).mkdir()
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            workers = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus_per_worker))
            sink = _sink(str(tmp), compress, settings.options.max_error_lines)
            # The actors reserve the CPUs (and GPUs); reading and writing are light and run beside them
            # unreserved, or actors holding every CPU would starve the reads that feed them.
            dataset = ray.data.read_datasource(_datasource(inputs, options.task_docs), num_cpus=0)
            dataset = dataset.map_batches(
                LinkActor, fn_constructor_kwargs={"settings": settings, "names": names}, batch_size=None,
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None)
            dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0})
            stats, manifest_inputs, parts = _collect(sink.results, inputs, settings.options.max_error_lines)
            listed = {part.name for part in parts}
            for path in (tmp / PARTS).iterdir():  # what failed attempts left behind
                if f"{PARTS}/{path.name}" not in listed:
                    path.unlink()
            manifest = write_run_manifest(tmp, inputs=manifest_inputs, parts=parts, stats=stats,
                                          link={**describe, "workers": workers,
                                                "cpus_per_worker": options.cpus_per_worker,
                                                "gpus_per_worker": options.gpus_per_worker},
                                          engine="ray")
    except Exception as exc:
        raise unwrap_error(exc) from None
    stats.seconds = time.perf_counter() - started
    return RunStats(stats, manifest)


def _collect(results: list[dict], inputs: list[str], max_error_lines: int
             ) -> tuple[LinkStats, list[RunInput], list[PartRecord]]:
    stats = LinkStats(max_error_lines=max_error_lines)
    ends: dict[int, tuple[int, int]] = {}
    errors = []
    parts = []
    for result in results:
        documents, mentions, linked, bad = result["counts"]
        stats.documents += documents
        stats.mentions += mentions
        stats.linked += linked
        stats.nil += mentions - linked
        stats.errors += bad
        errors.extend(result["errors"])
        for number, records, last_line in result["ends"]:
            ends[number] = (records, last_line)
        if result["part"] is not None:
            parts.append(PartRecord.from_json(result["part"]))
    stats.error_lines = [message for _, _, message in sorted(errors)[:max_error_lines]]
    manifest_inputs = [RunInput(path, input_size(path), *ends.get(number, (None, None)))
                       for number, path in enumerate(inputs)]
    missing = [path for number, path in enumerate(inputs) if number not in ends]
    if missing:
        raise InputError(f"{missing[0]}: Ray did not report the end of this input (the run is incomplete)")
    return stats, manifest_inputs, parts

