"""Shared fixtures: tiny real models built in the test session (no network)."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

from mel.indexes.scann_backend import scann_available

# A LEALLA-shaped toy: many thin layers and a pooler (LEALLA-small: 24 x 128, 8 heads).
TINY_CONFIG = dict(vocab_size=0, hidden_size=32, num_hidden_layers=12, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=128, type_vocab_size=2)
TINY_WORDS = ("the of and a to in is was for on that with as by at from city river capital country king "
              "queen paris london berlin rome france germany italy spain museum song film team "
              "president company fruit apple planet element mercury jordan amazon java island").split()


def name_table(folder: Path, names: list[tuple[str, int]]):
    """A KB name table (loosely normalised names -> QID numbers), as `mel index build` writes one."""
    from mel.aliases import AliasSettings, AliasTable, count_aliases
    from mel.skips import SkipReport

    pairs = ((name, qid, "en") for name, qid in names)
    count_aliases(folder, pairs, AliasSettings(loose=True, all_origins=True), sources=[], report=SkipReport())
    return AliasTable.open(folder)


def write_wordpiece_vocab(path: Path, repeated: tuple[str, ...] = ()) -> int:
    """vocab.txt; `repeated` tokens get a second line at the end (real checkpoints have such lines)."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation)
    tokens += ["##" + c for c in string.ascii_lowercase + string.ascii_uppercase + string.digits]
    tokens += [w for w in TINY_WORDS if w not in tokens]
    tokens += list(repeated)
    path.write_text("\n".join(tokens) + "\n")
    return len(tokens)


def make_tiny_checkpoint(folder: Path, *, seed: int = 0, safetensors: bool = True, repeated: tuple[str, ...] = (),
                         **overrides) -> Path:
    """Save a randomly initialised BertModel (with pooler) and a WordPiece vocab to `folder`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_wordpiece_vocab(folder / "vocab.txt", repeated)
    torch.manual_seed(seed)
    config = transformers.BertConfig(**{**TINY_CONFIG, "vocab_size": vocab_size, **overrides})
    model = transformers.BertModel(config).eval()
    model.save_pretrained(folder)
    if not safetensors:  # transformers 5 writes safetensors only; make the legacy file ourselves
        for f in folder.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-hf") / "tiny-lealla")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint exported to a mel model folder (fp32 + int8), int8 on CPU.

    The tests that use it rely on the CPU default being int8 (it embeds a text alike in any
    batch). The export picks it by timing int8 against fp32, and on a 32-wide model the two are
    so close that load on the machine decides (it once chose fp32 in CI), so the choice is pinned
    here; tests/exporters/test_variants.py checks the export's own choice."""
    import json

    from mel.exporters.model_folder import export_checkpoint
    from mel.models import MANIFEST_NAME

    out = tmp_path_factory.mktemp("tiny-mel") / "model"
    export_checkpoint(str(tiny_checkpoint), out, precisions=("fp32", "int8"))
    manifest = out / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    data["auto"]["cpu"] = "int8"
    manifest.write_text(json.dumps(data, indent=2))
    return out


@pytest.fixture(scope="session")
def mel_home(tmp_path_factory) -> Path:
    """A private $MEL_HOME for the whole session (the default model is built there once)."""
    home = tmp_path_factory.mktemp("mel-home")
    previous = os.environ.get("MEL_HOME")
    os.environ["MEL_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("MEL_HOME", None)
    else:
        os.environ["MEL_HOME"] = previous


@pytest.fixture(scope="session")
def default_model(mel_home) -> Path:
    """The offline default model (multilingual-e5-small from the wheels), built once a session."""
    from mel.exporters.default_model import build_default_model
    from mel.models import default_model_path

    build_default_model(default_model_path())
    return default_model_path()


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the session: 2 CPUs, no dashboard, no usage telemetry, no network."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Tests marked `scann` need ScaNN, which exists for Linux x86-64 only, and tests marked `ray` need
    Ray Data (mel[ray]): skipped where they are missing."""
    missing = {"scann": None if scann_available() else
               "needs ScaNN (Linux x86-64 only); the exact NumPy search is tested anyway",
               "ray": None if ray_available() else "needs Ray Data: pip install 'mel[ray]'"}
    for item in items:
        for mark, reason in missing.items():
            if reason and mark in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
