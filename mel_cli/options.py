"""Options shared by several commands, so they read the same everywhere."""

from __future__ import annotations

import click


def split_commas(ctx, param, values):
    """Callback: comma-separated and/or repeated values -> a tuple (None when not given)."""
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(out) or None

device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the encoder runs; auto picks CUDA when onnxruntime has it.")
threads_option = click.option(
    "--threads", type=click.IntRange(1, 1024), default=None,
    help="CPU threads for the encoder (default: the cores this process may use).")
batch_size_option = click.option(
    "--batch-size", type=click.IntRange(1, 65536), default=64, show_default=True,
    help="Texts per encoder call.")
model_option = click.option(
    "--model", "model", default=None,
    help="Model folder (default: the one named by the index, or the offline default model).")
max_length_option = click.option(
    "--max-length", type=click.IntRange(8, 512), default=64, show_default=True,
    help="Tokens per mention/entity window.")
