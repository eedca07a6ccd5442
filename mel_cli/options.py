"""Option bundles shared by several commands, so that each option means one thing everywhere."""

from __future__ import annotations

import functools

import click

from mel.models import PRECISIONS
from mel.runtime import DEVICES

ENGINES = ("local", "ray")


def split_commas(ctx, param, values):
    """Callback: comma-separated and/or repeated values -> a tuple (None when not given)."""
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(out) or None


def _apply(function, options):
    for option in reversed(options):
        function = option(function)
    return function


# --model --device --precision --threads --batch-size -q: how to run the encoder, in every
# command that encodes (link, eval jsonl, eval mewsli9, index build, model embed).
ENCODER_OPTIONS = [
    click.option("--model", "model", default=None, metavar="MODEL",
                 help="Model folder, or `default` (the offline multilingual-e5-small). Commands that search an "
                      "index default to the model the index was built with; the others to `default`."),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                 help="Where the encoder runs; auto picks CUDA when onnxruntime has it and a GPU is seen."),
    click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default="auto", show_default=True,
                 help="Which model variant to run: auto is the one the model's export measured fastest at the "
                      "accuracy bar (int8 or fp32 on CPU, fp16 on CUDA when the folder has it), else fp32."),
    click.option("--threads", type=click.IntRange(1, 1024), default=None,
                 help="CPU threads for the encoder and for string matching (default: the cores this process "
                      "may use)."),
    click.option("--batch-size", type=click.IntRange(1, 65536), default=None,
                 help="Texts per encoder call (default: on CPU, as many as fit in about 1,536 padded tokens, "
                      "at most 64; on CUDA, 64)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress and no summary on stderr (errors still show)."),
]


def encoder_options(function):
    """Adds the encoder options; the command receives them as one `EncoderSettings` (`encoder`) plus `quiet`."""
    from mel.retrieval import EncoderSettings

    @functools.wraps(function)
    def wrapper(*args, model, device, precision, threads, batch_size, **kwargs):
        return function(*args, encoder=EncoderSettings(model=model, device=device, precision=precision,
                                                       threads=threads, batch_size=batch_size), **kwargs)

    return _apply(wrapper, ENCODER_OPTIONS)


def engine_options(*, engine_help: str, workers_help: str, task_docs: bool = False):
    """Adds --engine and the Ray options (--workers, --cpus-per-worker, --gpus-per-worker, with
    `task_docs` --task-docs, --address) of `mel link` and `mel index build`; the command receives
    `engine` and `ray`: the Ray options (a RayOptions) for --engine ray, else None. A Ray option
    given with --engine local is a usage error."""
    options = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True, help=engine_help),
        click.option("--workers", type=click.IntRange(1), default=None, help=workers_help),
        click.option("--cpus-per-worker", type=click.FloatRange(0.01), default=1.0, show_default=True,
                     help="--engine ray: CPUs each actor reserves (and encoder threads, unless --threads)."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="--engine ray: GPUs each actor reserves (use with --device cuda)."),
        *([click.option("--task-docs", type=click.IntRange(1), default=2_000, show_default=True,
                        help="--engine ray: documents per task (one read block, one actor call, one part file).")]
          if task_docs else []),
        click.option("--address", default=None,
                     help="--engine ray: a running Ray cluster (default: $RAY_ADDRESS, else a local cluster)."),
    ]
    names = ["workers", "cpus_per_worker", "gpus_per_worker", *(["task_docs"] if task_docs else []), "address"]

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, engine, **kwargs):
            values = {name: kwargs.pop(name) for name in names}
            if engine == "local":
                ctx = click.get_current_context()
                given = [f"--{name.replace('_', '-')}" for name in names
                         if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
                if given:
                    raise click.UsageError(f"{', '.join(given)}: for --engine ray")
                return function(*args, engine=engine, ray=None, **kwargs)
            from mel.engines.ray_link import RayOptions

            return function(*args, engine=engine, ray=RayOptions(**values), **kwargs)

        return _apply(wrapper, options)

    return decorate


# In every command that opens an index (link, eval jsonl, eval mewsli9).
no_verify_option = click.option(
    "--no-verify", is_flag=True,
    help="Skip checking the index's files against their sha256 when opening it (about 0.7 s per GB; "
         "sizes and table values are checked anyway). For trusted local copies.")

max_length_option = click.option(
    "--max-length", type=click.IntRange(8, 512), default=64, show_default=True,
    help="Tokens per mention/entity window.")

variants_option = click.option(
    "--variants", "variants", multiple=True, type=click.Choice([p for p in PRECISIONS if p != "fp32"]),
    help="Model variants to write besides fp32 (repeatable; default: int8). fp16 is for GPUs, int8 for CPUs.")


def renamed(old: str, new: str, *, multiple: bool = False, is_flag: bool = False, **kwargs):
    """A hidden option under a name that was changed: kept for one release (CHANGELOG)."""
    return click.option(old, f"old_{new.lstrip('-').replace('-', '_')}", hidden=True, multiple=multiple,
                        is_flag=is_flag, **kwargs)


def merge_renamed(new_value, old_value, old: str, new: str):
    """The value of an option given under its new name or its old one (with a note for the old)."""
    if old_value in (None, (), False):
        return new_value
    click.echo(f"mel: note: {old} is now called {new}; the old name goes away in the next release", err=True)
    if isinstance(old_value, tuple):
        return tuple(new_value or ()) + old_value
    given = click.get_current_context().get_parameter_source(new.lstrip("-").replace("-", "_"))
    return new_value if given == click.core.ParameterSource.COMMANDLINE else old_value
