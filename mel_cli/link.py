"""`mel link`: the main job."""

from __future__ import annotations

import sys

import click

from mel.cli.options import encoder_options, no_verify_option
from mel.methods import DEFAULT_METHOD, METHODS


@click.command("link")
@click.argument("input_path", metavar="INPUT", default="-")
@click.option("--index", "index_dir", type=click.Path(), default=None, help="Index folder (mel index build).")
@click.option("--aliases", "aliases_dir", type=click.Path(), default=None,
              help="Alias table folder (mel alias build), for --method alias and fuzzy.")
@click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
              help="How mentions are ranked (see `mel eval -h`): linker fuses every view and table of --index.")
@click.option("-o", "--output", default="-", show_default=True,
              help="Output JSON Lines (.zst compresses); a file is written under a temporary name and renamed "
                   "when complete (through a symlink: its target), a device or FIFO is written through.")
@click.option("--errors", "errors_path", default=None,
              help="Write bad input records here instead of into the output (written like -o).")
@click.option("--top-k", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Candidates kept per mention.")
@click.option("--min-score", type=float, default=None, help="Below this score a mention's qid is null (NIL).")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None,
              help="Below this probability a mention's qid is null (NIL); --method linker scores are calibrated "
                   "probabilities.")
@click.option("--explain", is_flag=True, help="Write each candidate's features (why it ranks where it does).")
@click.option("--strict", is_flag=True, help="Stop at the first bad input record (exit 3).")
@click.option("--allow-model-mismatch", is_flag=True,
              help="Search even if the model's checksum differs from the index's (experiments only).")
@click.option("--exact", is_flag=True, help="Exact NumPy search instead of ScaNN.")
@no_verify_option
@encoder_options
def link(input_path, index_dir, aliases_dir, method, output, errors_path, top_k, min_score, min_prob, explain,
         strict, allow_model_mismatch, exact, no_verify, encoder, quiet) -> None:
    """Link the mentions of documents to Wikidata QIDs.

    INPUT is mel documents JSON Lines (plain or zstd, detected by content; "-"
    or nothing for stdin): {"id", "lang", "text", "mentions": [{"start",
    "end"}]} with code-point offsets, or texts marking mentions inline as
    [M]mention[M]. Every input field is kept; each mention gains qid, score
    and candidates; a gold qid on input is kept as gold_qid. With the default
    method (the fused linker) a score is the calibrated probability that the
    qid is right, and candidates name the views that found them.

    Bad records are passed through with an "error" field (or to --errors),
    counted and listed by line. Exit status: 0 all linked, 3 some records had
    errors, 2 usage error, 1 fatal (index or model missing or corrupt, output
    not writable), 128+N stopped by signal N (SIGINT, SIGTERM, SIGHUP; no
    output file is left).

    \b
    Example:
      mel link corpus.jsonl --index idx/es -o linked.jsonl.zst
      zstdcat docs.jsonl.zst | mel link - --index idx/es | zstd > out.jsonl.zst
      mel link docs.jsonl --index idx/es --min-prob 0.5 --top-k 5 --explain
    """
    from mel.cli.errors import note, say
    from mel.cli.progress import link_progress
    from mel.linking import LinkOptions, run_link
    from mel.methods import open_ranker

    if min_prob is not None and method != "linker":
        raise click.UsageError(f"--min-prob needs --method linker (--method {method} scores are not probabilities; "
                               "use --min-score)")
    if explain and method != "linker":
        raise click.UsageError("--explain shows the fused linker's features: use it with --method linker")
    ranker = open_ranker(method, index=index_dir, aliases=aliases_dir, encoder=encoder, exact=exact,
                         allow_model_mismatch=allow_model_mismatch, announce=note, explain=explain,
                         verify=not no_verify)
    for line in ranker.notes:
        note(line)
    options = LinkOptions(top_k=top_k, min_score=min_score, min_prob=min_prob, strict=strict)
    with link_progress(enabled=not quiet) as progress:
        stats = run_link(input_path, ranker, output, errors_path=errors_path, options=options, progress=progress)
    if stats.broken_pipe:
        sys.exit(0)  # the reader went away (`mel link ... | head`): end quietly
    if not quiet:
        say(stats.summary())
        for line in stats.error_lines:
            say(f"  error: {line}")
        if stats.errors > len(stats.error_lines):
            say(f"  … and {stats.errors - len(stats.error_lines):,} more")
    if stats.errors:
        sys.exit(3)
