"""`mel index build --engine ray`: view shards embedded and tables built by an actor pool, assembled on the driver.

The driver reads the KB through once (no encoding) to count each view's entries, hence its
shards; Ray Data then sends each (view, shard number), and one item for the name and alias
tables, to an actor pool (`workers` actors of `cpus_per_worker` CPUs and `gpus_per_worker` GPUs,
one encoder each, loaded once), where the actor reads the KB through to its shard's entries,
embeds them and builds that shard's ScaNN searcher (`mel.index_parts.build_shards`), or builds
the tables (`mel.indexing.build_tables`), into a parts folder next to the output. The driver then
assembles the parts (`mel.index_parts.assemble_index`): the same index as the local build.
An actor that dies is restarted and its item built again (into the same folder, replaced).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mel.engines.ray_cluster import import_ray, ray_cluster, unwrap_error
from mel.engines.ray_link import RayOptions
from mel.index_parts import PARTS_MANIFEST, assemble_index, build_shards, count_entries, parts_record, selected_tables
from mel.indexes.builder import BuildProgress, shard_name
from mel.indexes.settings import IndexSettings
from mel.indexing import KBSelection, build_tables, common_record, no_entries
from mel.linker.folder import table_path, view_path
from mel.model_cache import resolve_model
from mel.retrieval import EncoderSettings
from mel.skips import SkipReport

TABLES_ITEM = "tables"  # the item whose actor builds the name and alias tables


def _is_item(wanted: tuple[str, int], view: str, number: int) -> bool:
    return (view, number) == wanted


class ShardActor:
    """One encoder per actor; builds the view shards (or the tables) it is given into the shared parts folder."""

    def __init__(self, selection: KBSelection, encoder: EncoderSettings, settings: IndexSettings, folder: str):
        self.selection, self.settings, self.folder = selection, settings, Path(folder)
        self.encoder = encoder.open(resolve_model(encoder.model))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        counts = []
        for view, number in zip(batch["view"].tolist(), batch["number"].tolist()):
            selection = dataclasses.replace(self.selection, report=SkipReport(strict=self.selection.report.strict))
            if view == TABLES_ITEM:
                for table in selected_tables(selection):  # a retried item starts over
                    shutil.rmtree(table_path(self.folder, table), ignore_errors=True)
                build_tables(self.folder, selection, BuildProgress())
                counts.append("{}")
                continue
            shutil.rmtree(view_path(self.folder, view) / shard_name(number), ignore_errors=True)
            wanted = (str(view), int(number))
            found, built = build_shards(self.folder, selection, self.encoder, self.settings,
                                        functools.partial(_is_item, wanted))
            if built != [(view, number)]:
                raise RuntimeError(f"{view} view shard {number} of {found} entries was not built")
            counts.append(orjson.dumps(found).decode())
        return {"view": batch["view"], "number": batch["number"], "counts": np.array(counts, dtype=object)}


def _absolute(paths):
    return tuple(str(Path(p).resolve()) for p in paths)


def build_index_with_ray(out: str, selection: KBSelection, encoder: EncoderSettings, settings: IndexSettings,
                         options: RayOptions = RayOptions(), *, force: bool = False,
                         announce: Callable[[str], None] | None = None) -> dict:
    """Build the linker index of `selection` at `out` on Ray Data (see the module docstring); its manifest."""
    import_ray()
    given = selection  # the manifest records the sources as given; the workers get them absolute
    selection = dataclasses.replace(selection, kb=_absolute(selection.kb), links=_absolute(selection.links),
                                    aliases=_absolute(selection.aliases))
    if encoder.model not in (None, "default"):
        encoder = dataclasses.replace(encoder, model=str(Path(encoder.model).resolve()))
    opened = encoder.open(resolve_model(encoder.model, announce=announce))
    common_record(given, opened)  # opens the alias tables given, before any worker starts
    if Path(out).exists() and not force:
        from mel.errors import ArtifactError

        raise ArtifactError(f"{out} already exists (use --force to replace it)")
    counts = count_entries(given)  # the selection's checks; fills the report of what the reader skipped
    if not any(counts.values()):
        raise no_entries(given)
    size = settings.shard_size
    shards = [(view, number) for view, entries in counts.items() for number in range(-(-entries // size))]
    items: list[dict[str, str | int]] = [{"view": view, "number": number} for view, number in shards]
    tables = selected_tables(given)
    if tables:
        items.append({"view": TABLES_ITEM, "number": -1})
    work = Path(out).resolve().with_name(f".{Path(out).name}.ray-parts")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with ray_cluster(options.address) as ray:
            ray.data.DataContext.get_current().enable_progress_bars = False
            workers = options.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus_per_worker))
            worker_selection = dataclasses.replace(selection, report=SkipReport(strict=selection.report.strict))
            # from_items: the items come from the driver, so no read task competes with the actors
            # for the CPUs they reserve.
            rows = ray.data.from_items(items).map_batches(
                ShardActor, fn_constructor_kwargs={"selection": worker_selection, "encoder": encoder,
                                                   "settings": settings, "folder": str(work)},
                batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
                num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None).take_all()
        done = sorted((str(row["view"]), int(row["number"])) for row in rows)
        counted = {str(row["counts"]) for row in rows if str(row["view"]) != TABLES_ITEM}
        if done != sorted(shards + ([(TABLES_ITEM, -1)] if tables else [])) \
                or any(orjson.loads(found) != counts for found in counted):
            raise RuntimeError(f"the workers built {done} of {sorted(counted)} entries; expected {items} of {counts}")
        from mel.artifacts import write_json

        parts = parts_record(given, opened, settings, counts, shards, tables, None)
        write_json(work / PARTS_MANIFEST, parts.to_json())
        manifest = assemble_index([work], out, force=force)
    except Exception as exc:
        raise unwrap_error(exc) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest
