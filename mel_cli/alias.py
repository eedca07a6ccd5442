"""`mel alias`: build, describe and query alias tables (the thesis's alias-table baselines)."""

from __future__ import annotations

import sys

import click

from mel.cli.options import merge_renamed, renamed, split_commas


@click.group("alias")
def alias_group() -> None:
    """Alias tables: training-link strings and the QIDs they point to, by count.

    An alias table (format mel.aliases.v1) counts the mention strings of
    training links per (alias, QID) and keeps each alias's top-K QIDs by
    count. It is a folder with a manifest (sources with sha256, settings,
    counts, tool versions, command) and plain .npy/UTF-8 files; `mel eval
    --method alias|fuzzy --aliases DIR` evaluates it, and `mel index build
    --aliases DIR --kinds label` embeds its strings (OLPEAT).

    \b
    Example:
      mel alias build --links damuel/es --links damuel/de -o aliases/es-de
      mel alias info aliases/es-de
      mel alias lookup aliases/es-de "Granada"
    """


@alias_group.command("build")
@click.option("--links", "sources", multiple=True, type=click.Path(exists=True, allow_dash=True),
              help="Training mentions: DaMuEL language part (or a folder of parts; their wiki-origin links), or "
                   "mel documents JSONL whose mentions carry gold qids; repeatable. One language part gives a "
                   "one-language table (OLAT).")
@renamed("--kb", "--links", multiple=True, type=click.Path(exists=True, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Alias table folder to write.")
@click.option("--uncased", is_flag=True, help="Lower-case aliases (and lookups); default: cased, as in the thesis.")
@click.option("--all-origins", is_flag=True, help="Count every DaMuEL link, not only those placed by Wikipedia "
                                                  "editors (origin \"wiki\").")
@click.option("--top-k", type=click.IntRange(1), default=100, show_default=True,
              help="QIDs kept per alias (the most linked).")
@click.option("--langs", multiple=True, callback=split_commas,
              help="Only these languages, from folders of DaMuEL parts or from documents' \"lang\" (comma-separated).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed source line instead of skipping it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
def build_cmd(sources, old_links, output, uncased, all_origins, top_k, langs, force, strict, quiet) -> None:
    """Count training links per (alias, QID) into an alias table.

    Sources are streamed and counted in bounded memory (sorted runs spilled
    to disk and merged), so a table of all of DaMuEL builds on a laptop. The
    table is written under a temporary name and renamed when complete.
    Malformed lines are counted, reported with file and line, and skipped.

    \b
    Example:
      mel alias build --links damuel/es -o aliases/es                 # OLAT (Spanish)
      mel alias build --links damuel --langs es,de,en -o aliases/es-de-en
      mel alias build --links damuel/es --uncased --top-k 10 -o aliases/es-uncased
      mel alias build --links train.jsonl -o aliases/train            # gold mentions of mel documents
    """
    from mel.aliases import AliasSettings, build_alias_table
    from mel.cli.errors import say
    from mel.cli.progress import spinner
    from mel.cli.reports import print_skip_report
    from mel.skips import SkipReport

    sources = merge_renamed(sources, old_links, "--kb", "--links")
    if not sources:
        raise click.UsageError("give the training mentions to count with --links")

    report = SkipReport(strict=strict, max_examples=20)
    settings = AliasSettings(cased=not uncased, all_origins=all_origins, top_k=top_k, langs=langs)
    with spinner("counting", enabled=not quiet) as show:
        progress = None if show is None else \
            (lambda count: show(lambda elapsed: f"{count:,} mentions read ({count / elapsed:,.0f}/s)"))
        manifest = build_alias_table(output, sources, settings, report=report, force=force, progress=progress)
    if not quiet:
        print_skip_report(report)
        counts = manifest["counts"]
        say(f"{output}: {counts['aliases']:,} aliases, {counts['pairs']:,} (alias, QID) pairs, "
                 f"{counts['qids']:,} QIDs from {counts['mentions']:,} mentions "
                 f"({', '.join(manifest['languages'])})")


@alias_group.command("info")
@click.argument("table_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info_cmd(table_dir: str, as_json: bool) -> None:
    """Describe an alias table: sources, settings, counts.

    \b
    Example:
      mel alias info aliases/es
      mel alias info aliases/es --json | jq .counts
    """
    from mel.aliases import AliasTable
    from mel.cli.reports import print_json, print_mapping

    table = AliasTable.open(table_dir)
    if as_json:
        print_json(table.manifest)
        return
    manifest = table.manifest
    sources = [s["path"] + (f" ({s['lang']})" if s.get("lang") else "") for s in manifest["sources"]]
    print_mapping(f"Alias table {table_dir}", {
        "format": manifest["format"],
        "sources": ", ".join(sources),
        "languages": ", ".join(manifest["languages"]),
        "settings": manifest["settings"],
        "aliases": f"{manifest['counts']['aliases']:,}",
        "(alias, QID) pairs": f"{manifest['counts']['pairs']:,} (of {manifest['counts']['pairs_before_top_k']:,})",
        "QIDs": f"{manifest['counts']['qids']:,}",
        "mentions counted": f"{manifest['counts']['mentions']:,}",
        "created": f"{manifest['created']} by `{manifest['command']}`",
    })


@alias_group.command("lookup")
@click.argument("table_dir", type=click.Path())
@click.argument("strings", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(1), default=10, show_default=True, help="QIDs shown per string.")
def lookup_cmd(table_dir: str, strings: tuple[str, ...], top_k: int) -> None:
    """Look mention strings up exactly: their QIDs, most linked first, as JSON lines.

    \b
    Example:
      mel alias lookup aliases/es Granada "Ciudad de México"
    """
    import orjson

    from mel.aliases import AliasTable

    table = AliasTable.open(table_dir)
    for string in strings:
        found = table.lookup(string)[:top_k]
        record = {"alias": string, "normalized": table.normalize(string),
                  "candidates": [{"qid": qid, "count": count} for qid, count in found]}
        sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
