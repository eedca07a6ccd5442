"""The linker with training links and gold from the corpus itself, kept apart.

    python bench/bench_own_links.py [--work /tmp/mel-bench-linker]

Reads ../shared/data/el-dev (not in the repo; skipped cleanly without it). The dev sets of
at least 50 documents are split by document (the i-th document by i mod 5): three fifths
are training links, one fifth gold to tune on, one fifth the test. On the test documents,
micro R@1 (and the linker's ECE) of:

- `labels` and the untuned linker on an index of the set's KB alone (as bench/bench_linker.py);
- the untuned linker on an index built with the links (`mel index build --kb KB --links
  links.jsonl`: alias table with P(entity | alias), and the links' contexts as entries);
- that index tuned on the tune fifth (`mel index tune IDX --gold tune.jsonl --refit R`), with
  each refit: auto (the default; which one it chose is recorded), new trees, calibration only.

It also checks that tuning the index on its own links is refused (their alias counts and
contexts would be the mentions' own). Figures go to bench/results/own_links.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_linker  # noqa: E402
import linker_data  # noqa: E402

RESULTS = linker_data.ROOT / "bench" / "results" / "own_links.json"
MIN_DOCUMENTS = 50  # the tune fifth needs five documents at least; fewer than 10 make a poor fit
PARTS = {"links": (0, 1, 2), "tune": (3,), "test": (4,)}


def split(name: str, folder: Path) -> dict[str, Path] | None:
    lines = [line for line in linker_data.gold_path(name).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < MIN_DOCUMENTS:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, remainders in PARTS.items():
        out[part] = folder / f"{part}.jsonl"
        out[part].write_text("".join(line + "\n" for i, line in enumerate(lines) if i % 5 in remainders),
                             encoding="utf-8")
    return out


def tuned_key(refit: str) -> str:
    """The results' key for the index tuned with `--refit refit` (the default, auto, has none)."""
    return "linker_with_links_tuned" + ("" if refit == "auto" else f"_{refit}")


def main() -> int:
    work = linker_data.work_from_command_line(__doc__)
    if work is None:
        return 0
    from mel.tuning import REFITS  # mel index tune --refit, the default (auto) first

    results: dict = {"command": "python bench/bench_own_links.py",
                     "split": "document i: links when i mod 5 is 0, 1 or 2; tune when 3; test when 4", "sets": {}}
    for name in [*linker_data.ENGLISH, *linker_data.MULTILINGUAL]:
        folder = work / "own-links" / name
        parts = split(name, folder)
        if parts is None:
            print(f"{name:26s} skipped: fewer than {MIN_DOCUMENTS} documents", flush=True)
            continue
        kb = linker_data.kb_path(name)
        plain = linker_data.build(kb, work / f"index-{name}")
        with_links = linker_data.build(kb, folder / "index-links", links=parts["links"])
        refused = linker_data.cli("index", "tune", with_links, "--gold", parts["links"], "-q", expect=(1,))
        test = parts["test"]
        entry = {
            "documents": {part: sum(1 for _ in path.open(encoding="utf-8")) for part, path in parts.items()},
            "labels": bench_linker.evaluate("labels", test, plain, folder, "plain"),
            "linker_kb_only": bench_linker.evaluate("linker", test, plain, folder, "plain"),
            "linker_with_links": bench_linker.evaluate("linker", test, with_links, folder, "links"),
            "tune_on_the_links_refused": "(its --links)" in refused.stderr,
        }
        for refit in REFITS:
            tuned = folder / f"index-links-tuned-{refit}"
            shutil.rmtree(tuned, ignore_errors=True)
            shutil.copytree(with_links, tuned)
            report = folder / f"tune-{refit}.json"
            linker_data.cli("index", "tune", tuned, "--gold", parts["tune"], "--refit", refit, "--report", report,
                            "-q")
            key = tuned_key(refit)
            entry[key] = bench_linker.evaluate("linker", test, tuned, folder, f"tuned-{refit}")
            entry[key]["refit"] = json.loads(report.read_text())["refit"]["chosen"]
        results["sets"][name] = entry
        print(f"{name:26s} test {entry['labels']['mentions']:5d} mentions: labels {100 * entry['labels']['R@1']:5.1f}"
              f"  linker {100 * entry['linker_kb_only']['R@1']:5.1f}  with links "
              f"{100 * entry['linker_with_links']['R@1']:5.1f} (ECE {entry['linker_with_links']['ece']:.3f})  "
              + "  ".join(f"tuned {refit} {100 * entry[tuned_key(refit)]['R@1']:5.1f} "
                          f"(ECE {entry[tuned_key(refit)]['ece']:.3f})" for refit in REFITS)
              + f"  auto chose {entry[tuned_key('auto')]['refit']}; tuning on the links refused: "
              f"{entry['tune_on_the_links_refused']}", flush=True)
    linker_data.write_results(results, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
