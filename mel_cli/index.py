"""`mel index`: build, describe and verify sharded ScaNN indexes of a knowledge base."""

from __future__ import annotations

import sys

import click

from mel.cli.options import encoder_options, engine_options, merge_renamed, renamed, split_commas


@click.group()
def index() -> None:
    """Build, describe and verify sharded ScaNN indexes of a knowledge base.

    An index folder (format mel.index.v1) holds a manifest (model checksum,
    kinds, counts, shards with sha256 of every file, settings, tool versions,
    the command), one ScaNN searcher a shard, and the entry tables (QID,
    kind, language, label) as plain .npy/JSON. No pickles.

    \b
    Example:
      mel index build --kb damuel/es -o idx/es
      mel index info idx/es
      mel index verify idx/es --sample 2000
    """


@index.command("build")
@click.option("--kb", "kb", multiple=True, type=click.Path(exists=True),
              help="DaMuEL language part (folder of part-* xz files) or mel KB JSONL (.zst ok); repeatable.")
@click.option("--links", multiple=True, type=click.Path(exists=True),
              help="Training mentions: the alias table with P(entity | alias), and context entries (--kinds "
                   "context); DaMuEL parts (their wiki-origin links) or mel documents JSONL with gold qids; "
                   "repeatable.")
@renamed("--contexts", "--links", multiple=True, type=click.Path(exists=True))
@click.option("--aliases", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Alias table (mel alias build) whose strings become label entries, one per (alias, QID) "
                   "pair (the OLPEAT baseline; needs --kinds label); repeatable.")
@click.option("--kinds", multiple=True, callback=split_commas,
              help="Entry kinds: label (the string view), description and context (the context view); "
                   "comma-separated; default: label and description, plus context when --links is given; label "
                   "with --aliases alone.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Index folder to write.")
@click.option("--langs", multiple=True, callback=split_commas, help="Only these languages (comma-separated).")
@click.option("--target-lang", default=None,
              help="With several DaMuEL parts: prefer this language's description for each entity.")
@click.option("--require-page", is_flag=True, help="Only entities with a Wikipedia page.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many KB entities.")
@click.option("--contexts-per-qid", type=click.IntRange(1), default=None,
              help="At most this many training contexts per QID.")
@click.option("--all-origins", is_flag=True, help="Use every DaMuEL link as a context, not only wiki-origin ones.")
@click.option("--shard-size", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Entries per shard.")
@click.option("--num-leaves", type=click.IntRange(1), default=None,
              help="Tree leaves per large shard (default ≈ √entries).")
@click.option("--leaves-to-search", type=click.IntRange(1), default=None,
              help="Leaves searched per query (default: a tenth of the leaves).")
@click.option("--reorder", type=click.IntRange(1), default=100, show_default=True,
              help="Candidates rescored exactly after asymmetric hashing.")
@click.option("--exact", is_flag=True, help="Build no ScaNN searchers: search exactly with NumPy (small indexes).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted build of the same output (refused when a --kb or --links source "
                   "changed since).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed KB line instead of skipping it.")
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Job I of N (I from 0): build only its shards into the parts folder -o (string view shard s "
                   "when s mod N == I, context view shard s when (s+1) mod N == I; job 0 also the tables); "
                   "`mel index assemble` joins the N parts folders into the index.")
@engine_options(engine_help="local: this process; ray: view shards embedded, searchers and tables built by a Ray "
                            "actor pool (pip install 'mel[ray]'), then assembled into -o.",
                workers_help="--engine ray: encoder actors (default: the cluster's CPUs / --cpus-per-worker).")
@encoder_options
def build_cmd(kb, links, old_links, aliases, kinds, output, langs, target_lang, require_page, limit,
              contexts_per_qid, all_origins, shard_size, num_leaves, leaves_to_search, reorder, exact, resume,
              force, strict, shard_spec, engine, ray, encoder, quiet) -> None:
    """Encode a knowledge base into a linker index.

    The index holds a string view (labels and aliases, queried by the mention
    string), a context view (descriptions and training contexts, queried by
    the mention in context), the KB's name table and, with --links, an alias
    table of training links: everything the fused linker (mel link) uses.
    Entries are streamed in one KB pass: memory holds one shard plus a batch.
    The build happens in a hidden folder renamed into place at the end; an
    interrupted build continues with --resume. Malformed KB lines are counted,
    reported with file and line, and skipped (--strict stops).

    \b
    Example:
      mel index build --kb damuel/es --model models/lealla-small -o idx/es
      mel index build --kb kb.jsonl.zst --links train.jsonl -o idx/ctx --contexts-per-qid 10
      mel index build --kb kb.jsonl --kinds label -o idx/labels
      mel index build --aliases aliases/es --kinds label -o idx/olpeat-es
      mel index build --kb kb.jsonl --shard 1/4 -o parts/1     # then: mel index assemble parts/* -o idx
      mel index build --kb damuel/es --engine ray --workers 8 -o idx/es
    """
    from mel.cli.errors import note
    from mel.cli.progress import IndexProgress
    from mel.cli.reports import print_skip_report
    from mel.indexes.settings import IndexSettings
    from mel.indexing import KBSelection, build_kb_index
    from mel.model_cache import resolve_model
    from mel.skips import SkipReport

    links = merge_renamed(links, old_links, "--contexts", "--links")
    if not kinds and aliases and not kb and not links:
        kinds = ("label",)
    kinds = kinds or (("label", "description", "context") if links else ("label", "description"))
    report = SkipReport(strict=strict, max_examples=1000)
    selection = KBSelection(kb=kb, links=links or (), aliases=aliases, kinds=kinds, langs=langs,
                            target_lang=target_lang, require_page=require_page, limit=limit,
                            contexts_per_qid=contexts_per_qid, all_origins=all_origins, report=report)
    settings = IndexSettings(shard_size=shard_size, num_leaves=num_leaves, leaves_to_search=leaves_to_search,
                             reorder_num_neighbors=reorder, scann=not exact)
    if (shard_spec is not None or engine == "ray") and resume:
        raise click.UsageError("--resume is for a local build of the whole index")
    if shard_spec is not None and engine == "ray":
        raise click.UsageError("--shard is for array jobs without an engine; --engine ray builds every shard")
    if engine == "ray":
        import dataclasses

        from mel.engines.ray_index import build_index_with_ray

        if encoder.threads is None:
            encoder = dataclasses.replace(encoder, threads=max(1, int(ray.cpus_per_worker)))
        manifest = build_index_with_ray(output, selection, encoder, settings, ray,
                                        force=force, announce=note)
        print_skip_report(report)
        _say_built(output, manifest)
        return
    model = encoder.open(resolve_model(encoder.model, announce=note))
    if shard_spec is not None:
        from mel.index_parts import build_parts
        from mel.link_runs import Shard

        shard = Shard.parse(shard_spec)
        parts = build_parts(output, selection, model, settings, shard, force=force, status=None if quiet else note)
        print_skip_report(report)
        for view, numbers in parts.held.items():
            click.echo(f"{output}: {view} view shards {', '.join(map(str, numbers)) or 'none'} of "
                       f"{parts.shards(view)} ({parts.views[view]['entries']:,} entries in all)")
        click.echo(f"{output}: tables {', '.join(parts.held_tables) or 'none'}; job {shard}")
        return
    with IndexProgress(enabled=not quiet) as progress:
        manifest = build_kb_index(output, selection, model, settings=settings, resume=resume, force=force,
                                  progress=progress)
    print_skip_report(report)
    _say_built(output, manifest)


def _say_built(output, manifest: dict) -> None:
    for part, counts in manifest["counts"].items():
        if part.startswith("views/"):
            click.echo(f"{output}: {part[6:]} view: {counts['entries']:,} entries of {counts['qids']:,} QIDs; "
                       f"kinds {', '.join(counts['by_kind'])}; languages {', '.join(counts['by_language'])}")
        else:
            table = part[7:]
            what = "acronyms" if table == "initials" else "names"
            click.echo(f"{output}: {table} table: {counts['aliases']:,} {what} of {counts['qids']:,} QIDs")


@index.command("assemble")
@click.argument("parts", metavar="PARTS...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Index folder to write.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
def assemble_cmd(parts, output, force) -> None:
    """Join the parts folders of `mel index build --shard I/N` into one index.

    Checks that PARTS... are the N jobs of one build (same KB entries,
    settings and model) holding every shard of every view and each table
    once, and every file's sha256; the linker index written equals the
    single-process build's, shard for shard.

    \b
    Example:
      mel index assemble parts/0 parts/1 parts/2 parts/3 -o idx/es
      mel index verify idx/es
    """
    from mel.index_parts import assemble_index

    _say_built(output, assemble_index(parts, output, force=force))


@index.command("info")
@click.argument("index_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info_cmd(index_dir: str, as_json: bool) -> None:
    """Describe an index: counts, kinds, languages, dim, model, settings, size.

    \b
    Example:
      mel index info idx/es
      mel index info idx/es --json | jq .entries
    """
    from mel.cli.reports import print_index_info, print_json, print_mapping
    from mel.indexes.verify import info
    from mel.indexing import describe_index
    from mel.linker.folder import is_linker_index, view_path

    if as_json:
        print_json(describe_index(index_dir))
        return
    if not is_linker_index(index_dir):
        print_index_info(info(index_dir))
        return
    described = describe_index(index_dir)
    reranker = described["reranker"]
    print_mapping(f"Index {index_dir}", {
        "format": described["format"], "views": ", ".join(described["views"]),
        "tables": ", ".join(f"{name} ({t['counts']['aliases']:,} names, {t['counts']['qids']:,} QIDs)"
                            for name, t in described["tables"].items()) or "none",
        "reranker": (f"tuned on {', '.join(reranker.get('gold', []))} ({reranker.get('created')})" if reranker
                     else "the default shipped with mel"),
        "created": f"{described['created']} by `{described['command']}`",
    })
    from pathlib import Path

    for view in described["views"]:
        print_index_info(info(view_path(Path(index_dir), view)))


@index.command("verify")
@click.argument("index_dir", type=click.Path())
@click.option("--sample", type=click.IntRange(0), default=1000, show_default=True,
              help="Stored vectors used as queries to measure ScaNN's recall@10 against exact search.")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=None,
              help="Fail when the measured recall@10 is below this.")
@click.option("--model", "model", default=None, metavar="MODEL",
              help="Model folder to compare with the index's model checksum (default: the one the index names).")
def verify_cmd(index_dir: str, sample: int, min_recall: float | None, model: str | None) -> None:
    """Check an index: checksums, model match, and ScaNN recall@10 against exact search.

    Exits 1 naming every damaged, missing or unlisted file.

    \b
    Example:
      mel index verify idx/es
      mel index verify idx/es --sample 5000 --min-recall 0.95
    """
    from mel.cli.reports import print_verify_report
    from mel.indexing import verify_index

    report = verify_index(index_dir, sample=sample, min_recall=min_recall, model=model)
    print_verify_report(report)
    if not report.ok:
        sys.exit(1)


@index.command("tune")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--gold", "gold", multiple=True, required=True, type=click.Path(exists=True),
              help="Gold mentions: mel documents JSONL with gold qids, a Mewsli-9 folder, or DaMuEL parts (their "
                   "wiki-origin links); repeatable.")
@click.option("--trees", type=click.IntRange(10, 5000), default=200, show_default=True,
              help="Boosted trees in the reranker.")
@click.option("--depth", type=click.IntRange(1, 8), default=4, show_default=True, help="Depth of each tree.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the trees' row sampling.")
@click.option("--refit", type=click.Choice(["auto", "trees", "calibration"]), default="auto", show_default=True,
              help="What to fit: new trees and their calibration, only the calibration of the index's current "
                   "reranker, or (auto) whichever is better on the held-out documents (new trees only when right "
                   "on clearly more of them).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the tuning report (JSON) here.")
@click.option("--exact", is_flag=True, help="Exact NumPy search instead of ScaNN.")
@encoder_options
def tune_cmd(index_dir, gold, trees, depth, seed, refit, report_path, exact, encoder, quiet) -> None:
    """Fit the fused linker's reranker and calibration to your gold mentions.

    Every gold mention's candidates (from the index's views and tables) and
    their features are computed; one document in five is held out to measure
    R@1 before and after and the calibration (expected calibration error);
    then the reranker is fitted on all of them and written into the index
    (reranker.json, checksummed in its manifest). A few hundred gold mentions
    are too few for new trees but enough to calibrate the current ones: by
    default (--refit auto) new trees are kept only when they are right on
    clearly more held-out mentions. Gold that is 1% or more the
    index's own training links (--links at build) is refused: tune on documents
    held out of --links. Needs scikit-learn: pip install 'mel[tune]'.

    \b
    Example:
      mel index tune idx/es --gold dev.jsonl
      mel index tune idx/es --gold mewsli-9/output/dataset/es --gold more-gold.jsonl --report tune.json
      mel index tune idx/es --gold small-dev.jsonl --refit calibration
    """
    from mel.artifacts import write_json
    from mel.cli.errors import note, say
    from mel.errors import InputError
    from mel.fitting import FitSettings
    from mel.linker.ranker import FusedLinker
    from mel.methods import open_ranker
    from mel.skips import SkipReport
    from mel.tuning import tune_index

    linker = open_ranker("linker", index=index_dir, encoder=encoder, exact=exact, announce=note)
    if not isinstance(linker, FusedLinker):
        raise InputError(f"{index_dir}: a single-view index (built by an older mel) has no linker to tune; rebuild it")
    report = SkipReport(max_examples=10)
    result = tune_index(index_dir, gold, linker, settings=FitSettings(trees=trees, depth=depth, seed=seed),
                        refit=refit, report=report)
    before, after = result["held_out"]["before"], result["held_out"]["after"]
    say(f"{index_dir}: tuned on {result['mentions']:,} gold mentions of {result['documents']:,} documents "
        f"({result['candidates']:,} candidates)")
    say(f"held-out R@1 {100 * before['R@1']:.1f} -> {100 * after['R@1']:.1f} ({after['mentions']:,} mentions; "
        f"gold among the candidates: {100 * after['gold_among_candidates']:.1f}); "
        f"calibration error {before['calibration']['ece']:.3f} -> {after['calibration']['ece']:.3f} "
        f"(a perfectly calibrated linker would show {after['calibration']['ece_if_calibrated']:.3f} "
        f"on this many mentions)")
    say(refit_line(result))
    for line in result["notes"]:
        note(line)
    in_links = result["in_training_links"]
    if in_links and in_links["found"]:
        note(f"{in_links['found']:,} of {in_links['checked']:,} gold mentions checked are also training links of "
             f"{index_dir} (--links): in-sample, too few to refuse")
    for line in report.lines():
        say(line)
    if report_path:
        write_json(report_path, result)


def refit_line(result: dict) -> str:
    """What `mel index tune` fitted, and (auto) why."""
    chosen, refits = result["refit"]["chosen"], result["held_out"]["refits"]
    kept = ("new trees and their calibration" if chosen == "trees"
            else "the current reranker's trees, recalibrated on this gold")
    test = result["refit"]["sign_test"]
    if test is None:
        return f"wrote {kept} (--refit {chosen})"
    trees, recalibrated = refits["trees"], refits["calibration"]
    return (f"wrote {kept} (--refit auto): on the {trees['mentions']:,} held-out mentions, new trees R@1 "
            f"{100 * trees['R@1']:.1f} (ECE {trees['calibration']['ece']:.3f}), recalibrated "
            f"{100 * recalibrated['R@1']:.1f} (ECE {recalibrated['calibration']['ece']:.3f}); new trees alone right "
            f"on {test['only_trees_right']:,}, recalibrated alone on {test['only_recalibrated_right']:,} "
            f"(new trees are kept from {test['needed']:,} more)")
