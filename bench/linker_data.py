"""Shared by bench/fit_default_reranker.py and bench/bench_linker.py: the sets, their linker indexes.

The development sets live in ../shared/data/el-dev (not in the repo: their licences do
not allow redistribution); `available()` says whether they are there. The repo's own
sample (examples/, written for mel, Apache-2.0) is always available.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EL_DEV = Path(os.environ.get("MEL_EL_DEV", ROOT.parent / "shared" / "data" / "el-dev"))
ENGLISH = ("elevant-msnbc-updated", "elevant-oke-2015-train", "elevant-oke-2016-train", "elevant-derczynski")
MULTILINGUAL = ("hipe2022-dev",)
# OKE-2016 train holds the sentences of OKE-2015 train: the two are never split across fit and test.
GROUPS = {"elevant-oke-2015-train": "oke", "elevant-oke-2016-train": "oke"}


def available() -> bool:
    return all((EL_DEV / f"{name}.docs.jsonl").is_file() for name in ENGLISH + MULTILINGUAL)


def kb_path(name: str) -> Path:
    if name == "sample":
        return ROOT / "examples" / "kb.jsonl"
    return EL_DEV / f"{name}.kb.jsonl"


def gold_path(name: str) -> Path:
    if name == "sample":
        return ROOT / "examples" / "mewsli9-sample"
    return EL_DEV / f"{name}.docs.jsonl"


def union_kb(work: Path) -> Path:
    """The English dev sets' KBs as one: each (entity, language) once, with the union of its names."""
    import json

    out = work / "english-union.kb.jsonl"
    if out.is_file():
        return out
    merged: dict[tuple[str, str], dict] = {}
    for name in ENGLISH:
        for line in kb_path(name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            key = (record["qid"], record["lang"])
            held = merged.setdefault(key, {**record, "aliases": []})
            for alias in [record["label"], *record.get("aliases", [])]:
                if alias != held["label"] and alias not in held["aliases"]:
                    held["aliases"].append(alias)
    work.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged.values()), encoding="utf-8")
    return out


def cli(*args: str, expect: tuple[int, ...] = (0,)):
    """`mel ARGS` in this process; stops the bench unless it exits with one of `expect`."""
    from click.testing import CliRunner

    from mel.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code not in expect:
        raise SystemExit(f"mel {' '.join(map(str, args))} failed: {result.output}")
    return result


def build(kb: Path, folder: Path, kinds: str = "label,description", links: Path | None = None) -> Path:
    """A linker index of `kb` (and training `links`) with the default model (built once; reused when there)."""
    if not (folder / "manifest.json").is_file():
        cli("index", "build", "--kb", kb, "--kinds", kinds if links is None else f"{kinds},context",
            *(("--links", links) if links is not None else ()), "-o", folder, "--force", "-q")
    return folder


def provenance() -> dict:
    """What the figures depend on besides the code and the sets: the tool versions (the int8 model
    is quantised by onnxruntime, the reranker fitted by scikit-learn) and the default model's files."""
    from mel.artifacts import tool_versions
    from mel.model_cache import resolve_model

    manifest = resolve_model(None).manifest
    files = {name: digest[:12] for name, digest in manifest.files.items()}
    return {"tool_versions": tool_versions(), "model": {"identity": manifest.identity[:12], "files": files}}


def write_results(results: dict, path: Path) -> None:
    """A dev-set bench's figures (its command among them), with their provenance, to `path`, said on stdout."""
    from mel.artifacts import write_json

    results.update(provenance())
    write_json(path, results)  # complete or not at all, as mel's own outputs
    print(f"wrote {path.relative_to(ROOT)}")


def rows_key(index: Path, *inputs: Path) -> str:
    """What candidate rows depend on: the source code of mel and of the benches (which choose the
    documents), the index's manifest (which holds its checksums) and the input files (a Mewsli-9
    folder counts by its files)."""
    import hashlib

    digest = hashlib.sha256()
    code = sorted((ROOT / "mel").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    sources = [(p, p.relative_to(ROOT)) for p in code]
    sources.append((index / "manifest.json", Path("manifest.json")))
    for item in inputs:
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        sources += [(p, p.relative_to(item) if item.is_dir() else Path(p.name)) for p in files]
    for path, name in sources:
        digest.update(name.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def equal_set_weights(sizes: list[int]) -> list[float]:
    """One weight per mention, so that each set (of `sizes` mentions) weighs the same in a fit."""
    return [sum(sizes) / (len(sizes) * size) for size in sizes for _ in range(size)]


def fit_like_default(collected: dict, groups: dict[str, list[int]], names: list[str], seed: int = 0):
    """The reranker fitted on `names`' rows as the shipped default is (bench/fit_default_reranker.py):
    each set weighing the same, one Platt scaling for all languages fitted to the top candidate
    alone (as_stated=False); `groups` keep a document's
    copies in one calibration fold (bench_linker.content_groups); `seed` the fit's random seed."""
    from mel.fitting import FitSettings, concatenate, fit_reranker

    weights = equal_set_weights([collected[n].mentions for n in names])
    return fit_reranker(concatenate([collected[n] for n in names]), FitSettings(seed=seed),
                        groups=[g for n in names for g in groups[n]], weights=weights, per_language=False,
                        as_stated=False)


def leave_one_set_out(names: list[str], fit) -> dict:
    """For each dev set among `names`, `fit(others)` on every other set of `names` (OKE-2015 and
    OKE-2016 leave together), one fit per group: {held-out set: what fit returned}."""
    group = {name: GROUPS.get(name, name) for name in names}
    fitted: dict = {}
    out = {}
    for name in [n for n in (*ENGLISH, *MULTILINGUAL) if n in names]:
        if group[name] not in fitted:
            fitted[group[name]] = fit([n for n in names if group[n] != group[name]])
        out[name] = fitted[group[name]]
    return out


def bench_parser(doc: str):
    """The dev-set benches' command line: --work (where indexes and reports go) and what a bench adds."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--work", default="/tmp/mel-bench-linker")
    return parser


def work_from_command_line(doc: str) -> Path | None:
    """For a bench whose only option is --work: its work folder, or None where it skips."""
    return work_folder(bench_parser(doc).parse_args())


def work_folder(args) -> Path | None:
    """The bench's work folder (made), or None, said once, where the dev sets are absent: skip cleanly."""
    if not available():
        print(f"skipped: the development sets are not in {EL_DEV}")
        return None
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return work
