"""The package's layering (README, "Development"): each module imports only its own layer
or those below it, parallel packages of one layer do not import each other, and no
import cycle exists (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject.toml's package-dir).
FOLDERS = {"mel": "mel", "mel_cli": "mel.cli", "exporters": "mel.exporters", "indexes": "mel.indexes"}

# (layer, group): a module may import modules of a lower layer, or of its own layer and group.
LAYERS = {
    # core: errors, artifacts, records and readers, streams, the model manifest, the QID codec, the runtime
    "mel": (0, "core"), "mel.errors": (0, "core"), "mel.artifacts": (0, "core"), "mel.records": (0, "core"),
    "mel.streams": (0, "core"), "mel.skips": (0, "core"), "mel.models": (0, "core"), "mel.documents": (0, "core"),
    "mel.kb": (0, "core"),
    "mel.mewsli": (0, "core"), "mel.runtime": (0, "core"), "mel.qids": (0, "core"), "mel.damuel": (0, "core"),
    "mel.kinds": (0, "core"),
    # artifacts with their own formats
    "mel.indexes": (1, "indexes"), "mel.exporters": (1, "exporters"), "mel.aliases": (1, "aliases"),
    "mel.initials": (1, "aliases"), "mel.link_sketch": (1, "aliases"),
    # encoding, retrieval, ranking
    "mel.encoding": (2, "stages"), "mel.mentions": (2, "stages"), "mel.pronouns": (2, "stages"),
    "mel.retrieval": (2, "stages"),
    "mel.rankers": (2, "stages"), "mel.model_cache": (2, "stages"), "mel.pipeline": (2, "stages"),
    "mel.linker": (2, "stages"), "mel.methods": (2, "stages"), "mel.confidence": (2, "stages"),
    "mel.fitting": (2, "stages"), "mel.gold": (2, "stages"),
    # the jobs
    "mel.linking": (3, "jobs"), "mel.evaluation": (3, "jobs"), "mel.indexing": (3, "jobs"),
    "mel.training": (3, "jobs"), "mel.tuning": (3, "jobs"), "mel.link_runs": (3, "jobs"),
    "mel.link_merge": (3, "jobs"),
    "mel.index_parts": (3, "jobs"),
    # the Python API over the jobs, and the engines that run it past one process
    "mel.api": (4, "api"),
    "mel.engines": (5, "engines"),
    # the command line
    "mel.cli": (6, "cli"), "mel.__main__": (6, "cli"),
}
# The package itself is core (everything imports its __version__), and it re-exports the Python
# API, imported on first use (mel/__init__.py): that is the one import it may make.
PACKAGE_FACADE = {"mel.api"}


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    package = FOLDERS[relative.parts[0]]
    parts = [*package.split("."), *relative.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = sources()


def layer_of(name: str) -> tuple[int, str]:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"{name}: no layer assigned (add it to LAYERS in {Path(__file__).name})")


def imports_of(name: str, path: Path) -> set[str]:
    """mel modules imported anywhere in the file (names resolved to modules that exist)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_stay_in_or_below_their_layer(name):
    level, group = layer_of(name)
    if name == "mel":
        assert GRAPH[name] <= PACKAGE_FACADE, f"mel/__init__.py imports {sorted(GRAPH[name] - PACKAGE_FACADE)}"
        return
    for target in sorted(GRAPH[name]):
        if target == "mel":  # the package itself: __version__
            continue
        other_level, other_group = layer_of(target)
        assert other_level < level or (other_level == level and other_group == group), (
            f"{name} (layer {level}, {group}) imports {target} (layer {other_level}, {other_group})")


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if target == "mel":  # the package itself: __version__, imported by everything
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_the_graph_sees_lazy_and_relative_imports():
    # Guards the checker itself: the default model is built above both layers it uses.
    assert {"mel.exporters.default_model", "mel.models"} <= GRAPH["mel.model_cache"]
    assert "mel.aliases" in GRAPH["mel.indexing"]  # imported inside a function
    assert GRAPH["mel"] == {"mel.api"}  # the facade's lazy and TYPE_CHECKING imports


def test_import_mel_stays_light():
    """`import mel` loads no runtime: the API (onnxruntime, ScaNN, numpy) comes on first use."""
    import subprocess
    import sys

    code = "import sys, mel; print(mel.__version__, sorted(m for m in sys.modules if m.startswith('mel.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split(" ", 1)[1].strip() == "[]", done.stdout
    code = "import mel, sys; mel.Linker; print('onnxruntime' in sys.modules or 'mel.api' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "True\n"


UI_MODULES = ("rich", "click")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer_of(n)[1] != "cli"))
def test_no_user_interface_outside_the_cli(name):
    """Progress, tables and printing live in mel.cli; the library reports through callbacks."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            used = [(node.module or "").split(".")[0]]
        else:
            used = []
        assert not set(used) & set(UI_MODULES), f"{name} imports {used} (UI belongs in mel.cli)"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{name} calls print() at line {node.lineno} (UI belongs in mel.cli)"
