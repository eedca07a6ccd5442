"""`mel index`: build, describe and verify sharded ScaNN indexes of a knowledge base."""

from __future__ import annotations

import sys

import click

from mel.cli.options import device_option, model_option, split_commas, threads_option


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
@click.option("--contexts", multiple=True, type=click.Path(exists=True),
              help="Training contexts as extra entries: DaMuEL parts (their wiki links) or mel documents "
                   "JSONL with gold qids; repeatable.")
@click.option("--aliases", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Alias table (mel alias build) whose strings become label entries, one per (alias, QID) "
                   "pair (the OLPEAT baseline; needs --kinds label); repeatable.")
@click.option("--kinds", multiple=True, callback=split_commas,
              help="Entry kinds: description, context, label (comma-separated; default: description, plus "
                   "context when --contexts is given; label with --aliases alone).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Index folder to write.")
@click.option("--langs", multiple=True, callback=split_commas, help="Only these languages (comma-separated).")
@click.option("--target-lang", default=None,
              help="With several DaMuEL parts: prefer this language's description for each entity.")
@click.option("--require-page", is_flag=True, help="Only entities with a Wikipedia page.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many KB entities.")
@click.option("--contexts-per-qid", type=click.IntRange(1), default=None,
              help="At most this many training contexts per QID.")
@click.option("--all-origins", is_flag=True, help="Use every DaMuEL link as a context, not only wiki-origin ones.")
@model_option
@click.option("--shard-size", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Entries per shard.")
@click.option("--num-leaves", type=click.IntRange(1), default=None,
              help="Tree leaves per large shard (default ≈ √entries).")
@click.option("--leaves-to-search", type=click.IntRange(1), default=None,
              help="Leaves searched per query (default: a tenth of the leaves).")
@click.option("--reorder", type=click.IntRange(1), default=100, show_default=True,
              help="Candidates rescored exactly after asymmetric hashing.")
@click.option("--exact", is_flag=True, help="Build no ScaNN searchers: search exactly with NumPy (small indexes).")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Entries per encoder call.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]), default="auto", show_default=True,
              help="Model variant used to encode entries (auto: int8 on CPU, fp16 on CUDA).")
@device_option
@threads_option
@click.option("--resume", is_flag=True, help="Continue an interrupted build of the same output.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed KB line instead of skipping it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def build_cmd(kb, contexts, aliases, kinds, output, langs, target_lang, require_page, limit, contexts_per_qid,
              all_origins, model, shard_size, num_leaves, leaves_to_search, reorder, exact, batch_size,
              precision, device, threads, resume, force, strict, quiet) -> None:
    """Encode a knowledge base into a sharded index.

    Entries are streamed: memory holds one shard plus a batch, whatever the
    KB's size. The build happens in a hidden folder renamed into place at the
    end; an interrupted build continues with --resume. Malformed KB lines are
    counted, reported with file and line, and skipped (--strict stops).

    \b
    Example:
      mel index build --kb damuel/es --model models/lealla-small -o idx/es
      mel index build --kb kb.jsonl.zst --contexts train.jsonl -o idx/ctx --contexts-per-qid 10
      mel index build --kb kb.jsonl --kinds label -o idx/labels
      mel index build --aliases aliases/es --kinds label -o idx/olpeat-es
    """
    from mel.indexes.scann_settings import IndexSettings
    from mel.encoding import Encoder
    from mel.indexing import KBSelection, build_kb_index
    from mel.model_cache import resolve_model
    from mel.streams import SkipReport
    from mel.cli.reports import echo_err, print_skip_report

    if not kinds and aliases and not kb and not contexts:
        kinds = ("label",)
    kinds = kinds or (("description", "context") if contexts else ("description",))
    report = SkipReport(strict=strict, max_examples=1000)
    selection = KBSelection(kb=kb, contexts=contexts, aliases=aliases, kinds=kinds, langs=langs,
                            target_lang=target_lang, require_page=require_page, limit=limit,
                            contexts_per_qid=contexts_per_qid, all_origins=all_origins, report=report)
    encoder = Encoder(resolve_model(model, announce=echo_err), device=device, precision=precision,
                      threads=threads, batch_size=min(batch_size, 256))
    settings = IndexSettings(shard_size=shard_size, num_leaves=num_leaves, leaves_to_search=leaves_to_search,
                             reorder_num_neighbors=reorder, scann=not exact)
    manifest = build_kb_index(output, selection, encoder, settings=settings, batch_size=batch_size,
                              resume=resume, force=force, quiet=quiet)
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
    from mel.indexes.verify import info

    from mel.cli.reports import print_index_info, print_json

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
@model_option
def verify_cmd(index_dir: str, sample: int, min_recall: float | None, model: str | None) -> None:
    """Check an index: checksums, model match, and ScaNN recall@10 against exact search.

    Exits 1 naming every damaged, missing or unlisted file.

    \b
    Example:
      mel index verify idx/es
      mel index verify idx/es --sample 5000 --min-recall 0.95
    """
    from mel.indexing import verify_index
    from mel.cli.reports import print_verify_report

    report = verify_index(index_dir, sample=sample, min_recall=min_recall, model=model)
    print_verify_report(report)
    if not report.ok:
        sys.exit(1)
