"""`mel index`: build, describe and verify sharded ScaNN indexes of a knowledge base."""

from __future__ import annotations

import sys

import click

from mel.cli.options import encoder_options, merge_renamed, renamed, split_commas


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
              help="Training mentions, whose contexts become extra entries (--kinds context): DaMuEL parts "
                   "(their wiki-origin links) or mel documents JSONL with gold qids; repeatable.")
@renamed("--contexts", "--links", multiple=True, type=click.Path(exists=True))
@click.option("--aliases", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Alias table (mel alias build) whose strings become label entries, one per (alias, QID) "
                   "pair (the OLPEAT baseline; needs --kinds label); repeatable.")
@click.option("--kinds", multiple=True, callback=split_commas,
              help="Entry kinds: description, context, label (comma-separated; default: description, plus "
                   "context when --links is given; label with --aliases alone).")
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
@encoder_options
def build_cmd(kb, links, old_links, aliases, kinds, output, langs, target_lang, require_page, limit,
              contexts_per_qid, all_origins, shard_size, num_leaves, leaves_to_search, reorder, exact, resume,
              force, strict, encoder, quiet) -> None:
    """Encode a knowledge base into a sharded index.

    Entries are streamed: memory holds one shard plus a batch, whatever the
    KB's size. The build happens in a hidden folder renamed into place at the
    end; an interrupted build continues with --resume. Malformed KB lines are
    counted, reported with file and line, and skipped (--strict stops).

    \b
    Example:
      mel index build --kb damuel/es --model models/lealla-small -o idx/es
      mel index build --kb kb.jsonl.zst --links train.jsonl -o idx/ctx --contexts-per-qid 10
      mel index build --kb kb.jsonl --kinds label -o idx/labels
      mel index build --aliases aliases/es --kinds label -o idx/olpeat-es
    """
    from mel.cli.errors import note
    from mel.cli.progress import IndexProgress
    from mel.cli.reports import print_skip_report
    from mel.indexes.settings import IndexSettings
    from mel.indexing import KBSelection, build_kb_index
    from mel.model_cache import resolve_model
    from mel.streams import SkipReport

    links = merge_renamed(links, old_links, "--contexts", "--links")
    if not kinds and aliases and not kb and not links:
        kinds = ("label",)
    kinds = kinds or (("description", "context") if links else ("description",))
    report = SkipReport(strict=strict, max_examples=1000)
    selection = KBSelection(kb=kb, links=links or (), aliases=aliases, kinds=kinds, langs=langs,
                            target_lang=target_lang, require_page=require_page, limit=limit,
                            contexts_per_qid=contexts_per_qid, all_origins=all_origins, report=report)
    model = encoder.open(resolve_model(encoder.model, announce=note))
    settings = IndexSettings(shard_size=shard_size, num_leaves=num_leaves, leaves_to_search=leaves_to_search,
                             reorder_num_neighbors=reorder, scann=not exact)
    with IndexProgress(enabled=not quiet) as progress:
        manifest = build_kb_index(output, selection, model, settings=settings, resume=resume, force=force,
                                  progress=progress)
    print_skip_report(report)
    click.echo(f"{output}: {manifest.counts.entries:,} entries of {manifest.counts.qids:,} QIDs in "
               f"{len(manifest.shards)} shard(s); kinds {', '.join(manifest.counts.by_kind)}; "
               f"languages {', '.join(manifest.languages)}")


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
    from mel.cli.reports import print_index_info, print_json
    from mel.indexes.verify import info

    details = info(index_dir)
    if as_json:
        print_json(details.to_json())
    else:
        print_index_info(details)


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
