"""`mel eval` throughput and memory, and alias-table build/load/lookup at scale.

    python bench/bench_eval.py [--mentions 10000,50000] [--methods biencoder,alias,fuzzy]
                               [--entities 2000] [--table-aliases 2000000] [--out bench/results/eval.json]

Generates (once, in --work) synthetic Mewsli-9-format datasets of the given
mention counts (three languages, ~10 mentions a document, 64-token contexts
from multilingual sentences around synthetic entity names), a KB of
`--entities` entities, a description index of it built with the default
model at int8, and an alias table built from synthetic training documents.
Each `mel eval mewsli9` run then happens in a fresh process, through the
CLI, and reports mentions/s (ranking only, from the report's timing; and the
whole command's wall time) and its peak RSS, which should not grow with the
number of mentions. Finally an alias table of `--table-aliases` distinct
aliases is built, opened and queried, to time loading and lookups.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_encoder import SENTENCES  # noqa: E402

LANGS = ("es", "de", "ja")
SYLLABLES = "ka ri to mu se na lo vi da pe zu ho gi ra ne bo ti sa ku me".split()



WORK_PLACEHOLDER = "$WORK"
_work = ""


def shown(command: list[str]) -> str:
    """A command as recorded in the results: the work folder as $WORK, so no machine path is committed."""
    return ("mel " + " ".join(command)).replace(_work, WORK_PLACEHOLDER) if _work else "mel " + " ".join(command)

def entity_names(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: dict[str, None] = {}
    while len(names) < count:
        words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
                 for _ in range(rng.randint(1, 2))]
        names.setdefault(" ".join(words))
    return list(names)


def make_kb(path: Path, names: list[str]) -> None:
    rng = random.Random(1)
    with open(path, "wb") as out:
        for number, name in enumerate(names, start=1):
            out.write(orjson.dumps({"qid": f"Q{number}", "lang": "en", "label": name,
                                    "description": rng.choice(SENTENCES)}) + b"\n")


def make_mewsli(root: Path, mentions: int, names: list[str], seed: int = 0) -> None:
    """A Mewsli-9-format folder: per language docs.tsv, mentions.tsv, text/<docid>."""
    import hashlib

    rng = random.Random(seed)
    per_lang = [mentions // len(LANGS) + (i < mentions % len(LANGS)) for i in range(len(LANGS))]
    for lang, count in zip(LANGS, per_lang):
        folder = root / lang
        (folder / "text").mkdir(parents=True, exist_ok=True)
        with open(folder / "mentions.tsv", "w", encoding="utf-8") as m_out, \
                open(folder / "docs.tsv", "w", encoding="utf-8") as d_out:
            m_out.write("docid\tposition\tlength\tmention\turl\tlang\tqid\tqid_in_refs\tfreq_bin\n")
            d_out.write("docid\ttitle\tcurid\trevid\turl\ttext_md5\n")
            written, doc = 0, 0
            while written < count:
                doc += 1
                docid = f"{lang}-{doc}"
                pieces, rows, offset = [], [], 0
                for _ in range(min(10, count - written)):
                    sentence = rng.choice(SENTENCES) + " "
                    number = rng.randrange(len(names)) + 1
                    name = names[number - 1]
                    # The name is written as is 80% of the time, else with a typo (a miss for alias lookup).
                    surface = name if rng.random() < 0.8 else name[:-1]
                    pieces += [sentence, surface, ". "]
                    rows.append((offset + len(sentence), surface, number))
                    offset += len(sentence) + len(surface) + 2
                text = "".join(pieces)
                (folder / "text" / docid).write_text(text, encoding="utf-8")
                d_out.write(f"{docid}\t{docid}\t{doc}\t{doc}\thttps://{lang}.wikinews.example/{docid}\t"
                            f"{hashlib.md5(text.encode()).hexdigest()}\n")
                for position, surface, number in rows:
                    m_out.write(f"{docid}\t{position}\t{len(surface)}\t{surface}\thttps://www.wikidata.org/wiki/"
                                f"Q{number}\t{lang}\tQ{number}\tTrue\t{min(5, number % 6)}\n")
                written += len(rows)


def make_training(path: Path, names: list[str], mentions: int, seed: int = 2) -> None:
    """mel documents with gold qids: each name links its entity, sometimes another (ambiguity)."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for i in range(mentions):
            number = rng.randrange(len(names)) + 1
            target = number if rng.random() < 0.9 else rng.randrange(len(names)) + 1
            name = names[number - 1]
            text = f"{rng.choice(SENTENCES)} {name}."
            start = text.rindex(name)
            out.write(orjson.dumps({"id": f"t{i}", "lang": rng.choice(LANGS), "text": text, "mentions": [
                {"start": start, "end": start + len(name), "qid": f"Q{target}"}]}) + b"\n")


def run_child(argv: list[str]) -> None:
    """Child process: run one `mel` command in-process, print wall time and peak RSS as JSON."""
    from mel.cli import main as mel_main

    started = time.perf_counter()
    try:
        mel_main.main(argv, prog_name="mel", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mib": peak / 2**20}))


def mel(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--run", *argv], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mel {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table_scale(work: Path, aliases: int) -> dict:
    """Build, open and query an alias table of `aliases` distinct strings."""
    rng = random.Random(5)
    source = work / f"table-train-{aliases}.jsonl"
    strings = [f"{rng.choice(SENTENCES)[:rng.randint(4, 30)].strip()} {i}" for i in range(aliases)]
    if not source.exists():
        with open(source, "wb") as out:
            for i, alias in enumerate(strings):
                out.write(orjson.dumps({"id": str(i), "lang": "xx", "text": alias, "mentions": [
                    {"start": 0, "end": len(alias), "qid": f"Q{rng.randrange(1, 5_000_000)}"}]}) + b"\n")
    folder = work / f"table-{aliases}"
    command = ["alias", "build", "--kb", str(source), "-o", str(folder), "--force", "-q"]
    build = mel(command)
    child = subprocess.run([sys.executable, "-c", f"""
import json, random, resource, time
from mel.aliases import AliasTable
started = time.perf_counter()
table = AliasTable.open({str(folder)!r})
opened = time.perf_counter() - started
rng = random.Random(0)
queries = [table.alias(rng.randrange(len(table))) for _ in range(20000)] + [f"missing {{i}}" for i in range(20000)]
started = time.perf_counter()
found = sum(table.find(q) >= 0 for q in queries)
lookup = time.perf_counter() - started
rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
strings = table.strings()
decoded = time.perf_counter() - started
print(json.dumps({{"open_s": opened, "lookups_per_s": len(queries) / lookup, "found": found,
                  "decode_all_s": decoded, "peak_rss_mib_after_open_and_lookups": rss_open,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""], capture_output=True, text=True, check=True, cwd=str(HERE.parent))
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert figures["found"] == 20000
    return {"aliases": aliases, "build_command": shown(command), "build_s": build["wall_s"],
            "build_mentions_per_s": aliases / build["wall_s"], "build_peak_rss_mib": build["peak_rss_mib"],
            "size_mib": size / 2**20, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", default="10000,50000")
    parser.add_argument("--methods", default="biencoder,alias,fuzzy")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--training", type=int, default=200_000, help="training mentions for the alias table")
    parser.add_argument("--table-aliases", type=int, default=2_000_000)
    parser.add_argument("--work", default="/tmp/mel-bench-eval")
    parser.add_argument("--out", default="bench/results/eval.json")
    parser.add_argument("--run", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_child(args.run)
        return 0

    from mel.model_cache import resolve_model

    work = Path(args.work)
    global _work
    _work = str(work)
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model(None, announce=lambda m: print(m, file=sys.stderr))
    names = entity_names(args.entities)
    results: dict = {"entities": args.entities, "precision": "int8",
                     "model": f"{model.manifest.source} (sha256 {model.manifest.checksum[:12]})",
                     "threads": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg(),
                     "runs": []}
    kb, index, aliases = work / "kb.jsonl", work / f"index-{args.entities}", work / "aliases"
    if not index.exists():
        make_kb(kb, names)
        command = ["index", "build", "--kb", str(kb), "-o", str(index), "--precision", "int8", "-q"]
        built = mel(command)
        print(f"built the {args.entities:,}-entity description index in {built['wall_s']:.0f}s", file=sys.stderr)
    if not aliases.exists():
        training = work / "training.jsonl"
        make_training(training, names, args.training)
        command = ["alias", "build", "--kb", str(training), "-o", str(aliases), "-q"]
        built = mel(command)
        results["alias_build"] = {"command": shown(command), "mentions": args.training, **built,
                                  "mentions_per_s": args.training / built["wall_s"]}
        print(f"built the alias table from {args.training:,} mentions in {built['wall_s']:.1f}s", file=sys.stderr)
    for size in [int(s) for s in args.mentions.split(",")]:
        dataset = work / f"mewsli-{size}"
        if not dataset.exists():
            make_mewsli(dataset, size, names)
        for method in args.methods.split(","):
            report = work / f"report-{method}-{size}.json"
            source = ["--index", str(index), "--precision", "int8", "--device", "cpu"] if method == "biencoder" \
                else ["--aliases", str(aliases)]
            command = ["eval", "mewsli9", str(dataset), "--method", method, *source, "--report", str(report), "-q"]
            figures = mel(command)
            timing = json.loads(report.read_text())
            micro = timing["results"]["micro"]
            run = {"method": method, "mentions": timing["timing"]["mentions"], "command": shown(command),
                   "mentions_per_s": timing["timing"]["mentions_per_s"],
                   "mentions_per_s_wall": timing["timing"]["mentions"] / figures["wall_s"], **figures,
                   "R@1": micro["R@1"], "R@10": micro["R@10"], "R@100": micro["R@100"]}
            results["runs"].append(run)
            print(f"{method:>9} {size:>7,} mentions: {run['mentions_per_s']:,.0f} mentions/s ranking, "
                  f"{run['mentions_per_s_wall']:,.0f}/s wall ({run['wall_s']:.0f}s), peak RSS "
                  f"{run['peak_rss_mib']:.0f} MiB; R@1 {run['R@1']:.3f} R@10 {run['R@10']:.3f}")
    for method in args.methods.split(","):
        rss = [r["peak_rss_mib"] for r in results["runs"] if r["method"] == method]
        if len(rss) > 1:
            results[f"rss_growth_{method}"] = rss[-1] / rss[0] - 1
            print(f"{method}: peak RSS change from the smallest to the largest set: {rss[-1] / rss[0] - 1:+.1%}")
    if args.table_aliases:
        scale = table_scale(work, args.table_aliases)
        results["alias_table_scale"] = scale
        print(f"alias table of {scale['aliases']:,} aliases: built in {scale['build_s']:.0f}s "
              f"(peak RSS {scale['build_peak_rss_mib']:.0f} MiB) "
              f"({scale['size_mib']:.0f} MiB), opened in {scale['open_s'] * 1000:.0f} ms, "
              f"{scale['lookups_per_s']:,.0f} lookups/s (peak RSS {scale['peak_rss_mib_after_open_and_lookups']:.0f}"
              f" MiB), all strings decoded (for fuzzy) in {scale['decode_all_s']:.2f}s (peak RSS "
              f"{scale['peak_rss_mib']:.0f} MiB)")
    results["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
