"""`mel link`: the main job, and `mel link merge` for the run folders of sharded and Ray runs."""

from __future__ import annotations

import sys

import click

from mel.cli.options import encoder_options, engine_options, no_verify_option
from mel.methods import DEFAULT_METHOD, METHODS


class LinkGroup(click.Group):
    """`mel link INPUTS…` runs the link command itself; `mel link merge …` its one subcommand.

    (A group only so that help, man pages and `mel link merge -h` know the subcommand; an
    input file named `merge` is given as `./merge`.)
    """

    _SUB = "mel.link.subcommand"
    allow_interspersed_args = True  # options after INPUTS, as for a command (groups stop at the first argument)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            ctx.meta[self._SUB] = list(args)
            return []
        return click.Command.parse_args(self, ctx, args)

    def invoke(self, ctx: click.Context):
        args = ctx.meta.pop(self._SUB, None)
        if args is None:
            return click.Command.invoke(self, ctx)
        name, command, rest = self.resolve_command(ctx, args)
        assert command is not None and name is not None
        with command.make_context(name, rest, parent=ctx) as sub_ctx:
            return command.invoke(sub_ctx)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [self.options_metavar or "[OPTIONS]", "[INPUTS]..."]


class _Inputs(click.Argument):
    """INPUTS shows in `mel link`'s usage line only, not in `mel link merge`'s."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


@click.group("link", cls=LinkGroup, invoke_without_command=True)
@click.argument("inputs", metavar="[INPUTS]...", nargs=-1, cls=_Inputs)
@click.option("--index", "index_dir", type=click.Path(), default=None, help="Index folder (mel index build).")
@click.option("--aliases", "aliases_dir", type=click.Path(), default=None,
              help="Alias table folder (mel alias build), for --method alias and fuzzy.")
@click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
              help="How mentions are ranked (see `mel eval -h`): linker fuses every view and table of --index.")
@click.option("-o", "--output", default=None,
              help="Output JSON Lines (.zst compresses; default stdout); a file is written under a temporary name "
                   "and renamed when complete (through a symlink: its target), a device or FIFO is written "
                   "through; with --shard or --engine ray, the run folder to write.")
@click.option("--errors", "errors_path", default=None,
              help="Write bad input records here instead of into the output (written like -o; not for run "
                   "folders: see `mel link merge --errors`).")
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
@click.option("--shard", "shard_spec", default=None, metavar="I/N",
              help="Link shard I of N (I from 0) into the run folder -o: input j belongs to shard j mod N when "
                   "there are several inputs, else chunk c of --shard-docs documents to shard c mod N.")
@click.option("--shard-docs", type=click.IntRange(1), default=10_000, show_default=True,
              help="Documents per chunk when --shard splits one input.")
@engine_options(engine_help="local: this process; ray: Ray Data (pip install 'mel[ray]'), an actor pool of "
                            "Linkers writing the run folder -o.",
                workers_help="--engine ray: Linker actors (default: the cluster's CPUs / --cpus-per-worker).",
                task_docs=True)
@click.option("--compress", is_flag=True, help="Run folders: write part files as .jsonl.zst.")
@click.option("--force", is_flag=True, help="Replace the run folder -o if it exists.")
@encoder_options
def link(inputs, index_dir, aliases_dir, method, output, errors_path, top_k, min_score, min_prob, explain, strict,
         allow_model_mismatch, exact, no_verify, shard_spec, shard_docs, engine, ray, compress,
         force, encoder, quiet) -> None:
    """Link the mentions of documents to Wikidata QIDs.

    INPUTS are mel documents JSON Lines (plain or zstd, detected by content;
    "-" or nothing for stdin), files, globs or folders (their files, sorted),
    linked in that order: {"id", "lang", "text", "mentions": [{"start",
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

    With --shard I/N (array jobs) or --engine ray, -o is a run folder: part
    files of output records keyed to their input lines, and a manifest
    (inputs, counts, errors, checksums). `mel link merge` turns the run
    folders into the one file plain `mel link` writes, in input order.

    \b
    Example:
      mel link corpus.jsonl --index idx/es -o linked.jsonl.zst
      zstdcat docs.jsonl.zst | mel link - --index idx/es | zstd > out.jsonl.zst
      mel link docs.jsonl --index idx/es --min-prob 0.5 --top-k 5 --explain
      mel link 'corpus/*.jsonl.zst' --index idx/es --shard 3/8 -o runs/3
      mel link merge runs/0 runs/1 runs/2 runs/3 runs/4 runs/5 runs/6 runs/7 -o linked.jsonl.zst
      mel link corpus/ --index idx/es --engine ray --workers 4 -o runs/all
    """
    import dataclasses

    from mel.api import LinkerSettings
    from mel.cli.errors import note, say
    from mel.cli.progress import link_progress
    from mel.link_runs import Shard, expand_inputs
    from mel.linking import LinkOptions

    if min_prob is not None and method != "linker":
        raise click.UsageError(f"--min-prob needs --method linker (--method {method} scores are not probabilities; "
                               "use --min-score)")
    if explain and method != "linker":
        raise click.UsageError("--explain shows the fused linker's features: use it with --method linker")
    folder_out = shard_spec is not None or engine == "ray"
    if folder_out:
        if output is None:
            raise click.UsageError("--shard and --engine ray write a run folder: give it with -o")
        if errors_path:
            raise click.UsageError("--errors writes one file: run folders keep bad records in their parts "
                                   "(`mel link merge --errors FILE` splits them out)")
        if shard_spec is not None and engine == "ray":
            raise click.UsageError("--shard is for array jobs without an engine; give --engine ray all inputs")
    elif compress or force:
        raise click.UsageError("--compress and --force are for run folders (--shard, --engine ray)")
    paths = expand_inputs(inputs, allow_uris=engine == "ray")
    settings = LinkerSettings(index=index_dir, method=method, aliases=aliases_dir, encoder=encoder,
                              options=LinkOptions(top_k=top_k, min_score=min_score, min_prob=min_prob, strict=strict),
                              exact=exact, allow_model_mismatch=allow_model_mismatch, explain=explain,
                              verify=not no_verify)
    if engine == "ray":
        from mel.engines.ray_link import link_with_ray

        if encoder.threads is None:
            settings = dataclasses.replace(settings, encoder=dataclasses.replace(
                encoder, threads=max(1, int(ray.cpus_per_worker))))
        run = link_with_ray(paths, settings, output, ray, compress=compress, force=force,
                            announce=None if quiet else note)
        stats = run.stats
    else:
        linker = settings.open(announce=note)
        for line in linker.ranker.notes:
            note(line)
        with link_progress(enabled=not quiet) as progress:
            if shard_spec is not None:
                stats = linker.link_shard(paths, output, Shard.parse(shard_spec), force=force, compress=compress,
                                          shard_docs=shard_docs, progress=progress).stats
            else:
                stats = linker.link_files(paths, output or "-", errors=errors_path, progress=progress)
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


@link.command("merge")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="-", show_default=True,
              help="The merged JSON Lines (.zst compresses), renamed into place when complete.")
@click.option("--errors", "errors_path", default=None, help="Write the bad input records here instead.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr (errors still show).")
def merge_cmd(runs, output, errors_path, quiet) -> None:
    """Merge run folders (--shard, --engine ray) into one file, in input order.

    RUN... are every shard of one `--shard I/N` run, or one `--engine ray`
    run folder. Before writing, merge checks that they hold every record of
    every input exactly once and that each part's sha256 matches its
    manifest; the result is the file plain `mel link` writes for the same
    inputs.

    \b
    Example:
      mel link merge runs/0 runs/1 runs/2 runs/3 -o linked.jsonl.zst
      mel link merge runs/ray -o linked.jsonl --errors bad.jsonl
    """
    from mel.cli.errors import say
    from mel.link_merge import merge_runs

    stats = merge_runs(runs, output, errors_path=errors_path)
    if stats.broken_pipe:
        sys.exit(0)
    if not quiet:
        say(f"{stats.records:,} records ({stats.errors:,} with errors) of {stats.inputs:,} input(s) "
            f"from {stats.parts:,} part(s)")
