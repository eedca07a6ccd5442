"""`mel eval`: recall@K on Mewsli-9 and on mel documents with gold QIDs."""

from __future__ import annotations

import click

from mel.cli.options import encoder_options, no_verify_option, split_commas
from mel.methods import DEFAULT_METHOD, INDEX_METHODS, METHODS

METHOD_HELP = ("linker (default): the fused linker over every view and table of --index, scores are calibrated "
               "probabilities; biencoder: the index's context view as built; labels: its string view of entity "
               "labels, queried with the mention string; olpeat: a string view of alias strings "
               "(mel index build --aliases A --kinds label); alias: exact lookup in --aliases (or the index's alias "
               "table); fuzzy: exact lookup, then the nearest aliases by normalised Indel distance.")


def _ks(ctx, param, value: str):
    try:
        ks = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r}: give positive integers separated by commas, e.g. 1,10,100") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter(f"{value!r}: give positive integers separated by commas, e.g. 1,10,100")
    return tuple(ks)


def eval_options(function):
    """Options shared by `mel eval mewsli9` and `mel eval jsonl`."""
    options = [
        click.option("--index", "index_dir", type=click.Path(), default=None,
                     help="Index folder (mel index build) for --method biencoder, olpeat and labels."),
        click.option("--aliases", "aliases_dir", type=click.Path(), default=None,
                     help="Alias table folder (mel alias build) for --method alias and fuzzy."),
        click.option("--method", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
                     help=METHOD_HELP),
        click.option("--min-prob", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="NIL below this probability, for the NIL-aware precision, recall and F1 (--method linker)."),
        click.option("--langs", multiple=True, callback=split_commas,
                     help="Only these languages (comma-separated; default: all there are)."),
        click.option("--k", "ks", default="1,10,100", show_default=True, callback=_ks,
                     help="Cut-offs K of recall@K, comma-separated."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
                     help="Write the JSON report here (atomically)."),
        click.option("--allow-model-mismatch", is_flag=True,
                     help="Search even if the model's checksum differs from the index's (experiments only)."),
        click.option("--exact", is_flag=True, help="Exact NumPy search instead of ScaNN."),
        no_verify_option,
    ]
    function = encoder_options(function)
    for option in reversed(options):
        function = option(function)
    return function


@click.group("eval")
def eval_group() -> None:
    """Measure recall@K: on Mewsli-9, or on your own documents with gold QIDs.

    R@K is the share of mentions whose gold QID is among the top K distinct
    QIDs, per language, micro- and macro-averaged, by Mewsli-9 frequency bin
    and by qid_in_refs; the upper bound is the share of mentions whose gold
    QID is in the index (or alias table) at all. The thesis baselines are
    methods: alias table, string similarity (fuzzy), OLPEAT and labels.

    \b
    Example:
      mel eval mewsli9 mewsli-9/output/dataset --index idx/es --langs es
      mel eval mewsli9 mewsli-9/output/dataset --method alias --aliases aliases/es
      mel eval jsonl dev.jsonl --index idx/es --report dev-report.json
    """


def _open(method, index_dir, aliases_dir, encoder, exact, allow_model_mismatch, no_verify, report_path):
    """The ranker, its notes printed (_finish prints only those added while evaluating)."""
    from mel.artifacts import check_writable
    from mel.cli.errors import note
    from mel.methods import open_ranker

    if report_path:
        check_writable(report_path)  # before the evaluation, not after it

    ranker = open_ranker(method, index=index_dir, aliases=aliases_dir, encoder=encoder, exact=exact,
                         allow_model_mismatch=allow_model_mismatch, announce=note, verify=not no_verify)
    for line in ranker.notes:
        note(line)
    return ranker


def _finish(report: dict, report_path: str | None, quiet: bool, printed: int) -> None:
    from mel.artifacts import write_json
    from mel.cli.errors import note, say

    print_eval_report(report)
    for line in report["notes"][printed:]:
        note(line)
    unlinkable = report["unlinkable_mentions"]
    for example in unlinkable["examples"] if unlinkable["count"] and not quiet else []:
        say(f"  unlinkable: {example}")
    source = report["source"]
    if source["text_md5_mismatches"]:
        note(f"{source['text_md5_mismatches']} text file(s) differ from docs.tsv's text_md5 "
             "(their mentions were still checked one by one)")
    for line in _skip_lines(source):
        say(line)
    if report_path:
        write_json(report_path, report)
        if not quiet:
            say(f"report written to {report_path}")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def print_eval_report(report: dict) -> None:
    """The results as rich tables on stdout: per language, then by frequency bin and by qid_in_refs."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    ks = report["parameters"]["ks"]
    upper = report["upper_bound"]
    where = report.get("index", {}).get("path") or report.get("aliases", {}).get("path")
    table = Table(title=f"{report['method']} on {report['dataset']['path']} ({where}): recall@K, %",
                  title_justify="left")
    table.add_column("language")
    table.add_column("mentions", justify="right")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("upper bound", justify="right")
    for lang, row in report["results"].items():
        shown = f"{row['mentions']:,}" if lang != "macro" else f"{row['languages']} lang."
        style = "bold" if lang in ("micro", "macro") else None
        table.add_row(lang, shown, *(_percent(row[f"R@{k}"]) for k in ks),
                      _percent(upper[lang]["share"]) if lang in upper else "", style=style)
    console.print(table)
    for title, split, labels in (("frequency bin", "by_freq_bin", report.get("freq_bins", {})),
                                 ("qid_in_refs", "by_qid_in_refs", {})):
        if not report[split]:
            continue
        table = Table(title=f"By {title} (micro over languages), %", title_justify="left")
        table.add_column(title)
        table.add_column("mentions", justify="right")
        for k in ks:
            table.add_column(f"R@{k}", justify="right")
        for value, rows in report[split].items():
            micro = rows["micro"]
            label = f"{value}: {labels[value]}" if value in labels else value
            table.add_row(label, f"{micro['mentions']:,}", *(_percent(micro[f"R@{k}"]) for k in ks))
        console.print(table)
    unlinkable = report["unlinkable_mentions"]
    if unlinkable["count"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in unlinkable["by_kind"].items())
        console.print(f"unlinkable mentions: {unlinkable['count']:,} ({kinds}); {unlinkable['treatment']}")
    calibration, nil = report.get("calibration"), report.get("nil")
    if calibration and nil:
        console.print(f"calibration error (ECE) {calibration['ece']:.3f}; a perfectly calibrated linker would show "
                      f"{calibration['ece_if_calibrated']:.3f} on this many mentions")
        console.print(f"linked at probability >= {nil['threshold']:g}: {nil['linked']:,} of {nil['mentions']:,}, "
                      f"precision {_percent(nil['precision'])}, recall {_percent(nil['recall'])}, "
                      f"F1 {_percent(nil['f1'])}")
    timing = report["timing"]
    console.print(f"{timing['mentions']:,} mentions in {timing['seconds']:.1f}s "
                  f"({timing['mentions_per_s'] or 0:,.0f} mentions/s)")


def _skip_lines(source: dict) -> list[str]:
    out = [f"skipped {n} record(s): {reason}" for reason, n in source["skipped"].items()]
    out += [f"  e.g. {example}" for example in source["examples"]]
    out += [f"left out {n}: {reason}" for reason, n in source["filtered"].items()]
    return out


def _parameters(method, ks, langs, encoder, exact, allow_model_mismatch, verify, **more):
    params = {"method": method, "ks": list(ks), "langs": list(langs) if langs else None, **more}
    if method in INDEX_METHODS:
        params.update(model_option=encoder.model, precision=encoder.precision, device=encoder.device,
                      batch_size=encoder.batch_size, exact_search=exact, allow_model_mismatch=allow_model_mismatch,
                      verify_index=verify)
    return params


@eval_group.command("mewsli9")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@eval_options
@click.option("--skip-bad", is_flag=True,
              help="Leave out mentions whose text file is missing or whose span does not match the text "
                   "(default: count them as misses).")
@click.option("--no-check-md5", is_flag=True, help="Do not compare each text with docs.tsv's text_md5.")
def mewsli9_cmd(dataset, index_dir, aliases_dir, method, min_prob, langs, ks, report_path, allow_model_mismatch,
                exact, no_verify, encoder, quiet, skip_bad, no_check_md5) -> None:
    """Recall@K on a Mewsli-9 dataset folder (or one language folder of it).

    DATASET is the output/dataset folder made by Mewsli-9's get-mewsli-9.sh:
    <lang>/mentions.tsv, <lang>/docs.tsv, <lang>/text/<docid>. Every mention
    is linked in its context from the article text (or by its string, for
    label indexes and alias tables). Documents are streamed, so memory does not
    grow with the dataset.

    \b
    Example:
      mel eval mewsli9 mewsli-9/output/dataset --index idx/es --langs es --report es.json
      mel eval mewsli9 mewsli-9/output/dataset --method fuzzy --aliases aliases/all
      mel eval mewsli9 mewsli-9/output/dataset/es --method olpeat --index idx/olpeat-es
    """
    from mel.cli.progress import eval_progress
    from mel.evaluation import run_mewsli_eval
    from mel.skips import SkipReport

    ranker = _open(method, index_dir, aliases_dir, encoder, exact, allow_model_mismatch, no_verify, report_path)
    printed = len(ranker.notes)
    parameters = _parameters(method, ks, langs, encoder, exact, allow_model_mismatch, verify=not no_verify,
                             skip_bad=skip_bad, check_md5=not no_check_md5)
    with eval_progress(not quiet) as progress:
        report = run_mewsli_eval(dataset, ranker, method, langs=langs, ks=ks, skip_bad=skip_bad,
                                 check_md5=not no_check_md5, parameters=parameters, min_prob=min_prob,
                                 report=SkipReport(max_examples=10), progress=progress)
    _finish(report, report_path, quiet, printed)


@eval_group.command("jsonl")
@click.argument("input_path", metavar="FILE")
@eval_options
def jsonl_cmd(input_path, index_dir, aliases_dir, method, min_prob, langs, ks, report_path, allow_model_mismatch,
              exact, no_verify, encoder, quiet) -> None:
    """Recall@K on mel documents JSON Lines whose mentions carry a gold "qid".

    FILE is mel documents (plain or compressed, "-" for stdin):
    {"id", "lang", "text", "mentions": [{"start", "end", "qid"}]}. Results are
    per "lang" field ("und" when missing); a mention may also carry
    "freq_bin" (an integer) and "qid_in_refs" (true/false) for the splits.
    Mentions without a gold qid are counted and left out; malformed records
    are reported with their line and skipped.

    \b
    Example:
      mel eval jsonl dev.jsonl --index idx/es
      zstdcat held-out.jsonl.zst | mel eval jsonl - --method alias --aliases aliases/es --k 1,5
    """
    from mel.cli.progress import eval_progress
    from mel.evaluation import run_jsonl_eval
    from mel.skips import SkipReport

    ranker = _open(method, index_dir, aliases_dir, encoder, exact, allow_model_mismatch, no_verify, report_path)
    printed = len(ranker.notes)
    parameters = _parameters(method, ks, langs, encoder, exact, allow_model_mismatch, verify=not no_verify)
    with eval_progress(not quiet) as progress:
        report = run_jsonl_eval(input_path, ranker, method, langs=langs, ks=ks, parameters=parameters,
                                min_prob=min_prob, report=SkipReport(max_examples=10), progress=progress)
    _finish(report, report_path, quiet, printed)
