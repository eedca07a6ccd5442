"""bench/gpu_bundle.py: wheels packed into checked parts, unpacked only when every part is whole."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import lzma
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_bundle.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_bundle = _load()


def write_wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """A real (tiny) wheel: its files plus dist-info."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{name}-1.0.dist-info/METADATA", f"Name: {name}\nVersion: 1.0\n")
    return path


@pytest.fixture()
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    # Incompressible bytes, so that a small --part-mib gives several parts.
    noise = random.Random(0).randbytes(40_000)
    write_wheel(folder, "toypkg", {"toypkg/__init__.py": b"VALUE = 41 + 1\n", "toypkg/blob.bin": noise})
    write_wheel(folder, "scann", {"scann/__init__.py": b"", "scann/scann_ops/cc/_scann_ops.so": b"tensorflow op",
                                  "scann/scann_ops/cc/python/scann_pybind.so": b"kept"})
    write_wheel(folder, "platpkg", {"platpkg-1.0.data/platlib/platpkg.py": b"PLAT = True\n",
                                    "platpkg-1.0.data/scripts/tool": b"#!/bin/sh\n"})
    return folder


def test_pack_then_unpack_gives_the_wheels_files_without_the_dropped_ones(tmp_path, wheels):
    out = tmp_path / "bundle"
    manifest = gpu_bundle.pack(out, wheels, "3.12", part_mib=0.01)
    assert len(manifest["parts"]) >= 2 and sum(p["bytes"] for p in manifest["parts"]) == manifest["bytes"]
    assert max(p["bytes"] for p in manifest["parts"]) <= int(0.01 * (1 << 20))
    assert manifest["dropped"] == ["scann/scann_ops/cc/_scann_ops.so"]
    assert {p["name"] for p in manifest["packages"]} == {"toypkg", "scann", "platpkg"}
    assert json.loads((out / "bundle.json").read_text()) == manifest
    assert str(tmp_path) not in (out / "bundle.json").read_text()

    site = tmp_path / "site"
    gpu_bundle.unpack(out, site)
    assert (site / "toypkg" / "blob.bin").read_bytes() == (zipfile.ZipFile(next(wheels.glob("toypkg*")))
                                                           .read("toypkg/blob.bin"))
    assert (site / "scann" / "scann_ops" / "cc" / "python" / "scann_pybind.so").read_bytes() == b"kept"
    assert not (site / "scann" / "scann_ops" / "cc" / "_scann_ops.so").exists()
    assert (site / "platpkg.py").exists() and not list(site.glob("*.data"))  # platlib merged, scripts dropped
    done = subprocess.run([sys.executable, "-c", "import toypkg, platpkg; print(toypkg.VALUE, platpkg.PLAT)"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(site)})
    assert done.stdout.split() == ["42", "True"], done.stderr


def test_unpack_names_missing_and_damaged_parts_and_extracts_nothing(tmp_path, wheels):
    out = tmp_path / "bundle"
    manifest = gpu_bundle.pack(out, wheels, "3.12", part_mib=0.01)
    names = [p["file"] for p in manifest["parts"]]
    (out / names[-1]).unlink()
    damaged = out / names[0]
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    site = tmp_path / "site"
    with pytest.raises(gpu_bundle.BundleError) as caught:
        gpu_bundle.unpack(out, site)
    assert f"missing: {names[-1]}" in str(caught.value) and f"damaged: {names[0]}" in str(caught.value)
    assert f"of {len(names)} parts" in str(caught.value)
    assert not site.exists()


def _bundle_of(folder: Path, tar_bytes: bytes, part_name: str = "part-00") -> None:
    folder.mkdir()
    data = lzma.compress(tar_bytes, format=lzma.FORMAT_XZ)
    (folder / part_name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (folder / "bundle.json").write_text(json.dumps({
        "format": gpu_bundle.FORMAT, "packages": [], "bytes": len(data), "sha256": digest,
        "parts": [{"file": part_name, "bytes": len(data), "sha256": digest}]}))


def test_unpack_refuses_members_that_leave_the_target(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"x=1\n"))
    _bundle_of(tmp_path / "bundle", buffer.getvalue())
    with pytest.raises(gpu_bundle.BundleError, match="cannot extract"):
        gpu_bundle.unpack(tmp_path / "bundle", tmp_path / "site")
    assert not (tmp_path / "escaped.py").exists()


def test_unpack_refuses_a_part_name_outside_the_folder(tmp_path):
    _bundle_of(tmp_path / "bundle", b"")
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    manifest["parts"][0]["file"] = "../part-00"
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(gpu_bundle.BundleError, match="not a plain part file"):
        gpu_bundle.unpack(tmp_path / "bundle", tmp_path / "site")


def test_command_line_reports_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "unpack", str(tmp_path), "--target", str(tmp_path / "s")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"gpu_bundle: error: {tmp_path / 'bundle.json'}: missing "
                                                "(copy it there with the first part)"]
