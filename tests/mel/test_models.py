"""Model folders are checked, not trusted: every manifest field on load, the tokenizer and graph against
the manifest, and the model identity (what an index records) computed from the files' checksums."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.models import MANIFEST_NAME, ModelFolder, model_identity

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def other_int8(tmp_path_factory) -> Path:
    """A valid int8 graph of another model of the same shape."""
    from mel.exporters.model_folder import export_checkpoint
    from tests.conftest import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("other")
    export_checkpoint(str(make_tiny_checkpoint(folder / "ckpt", seed=7)), folder / "model")
    return folder / "model" / "model.int8.onnx"


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A label index of tests/data/kb.jsonl built with the tiny model (int8, the CPU default)."""
    folder = tmp_path_factory.mktemp("identity")
    index = folder / "idx"
    result = CliRunner().invoke(main, ["index", "build", "--kb", str(DATA / "kb.jsonl"), "--kinds", "label",
                                       "--model", str(tiny_model), "-o", str(index), "-q"])
    assert result.exit_code == 0, result.output
    return tiny_model, index


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    return folder


def edit(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def link(index: Path, model: Path, out: Path):
    return CliRunner().invoke(main, ["link", str(DATA / "docs.jsonl"), "--index", str(index), "--model", str(model),
                                     "-o", str(out), "-q"])


def test_the_index_records_the_identity_of_the_exported_files(built):
    model, index = built
    record = json.loads((index / "manifest.json").read_text())["model"]
    files = ModelFolder.open(model).manifest.files
    assert record["identity"] == model_identity(files) == ModelFolder.open(model).identity
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))  # what `sha256sum` prints
    assert record["identity"] == hashlib.sha256(listing.encode()).hexdigest()
    assert record["checksum"] == files["model.onnx"]


def test_a_replaced_variant_whose_entry_was_edited_is_refused(built, model_copy, other_int8, tmp_path):
    _, index = built
    shutil.copy(other_int8, model_copy / "model.int8.onnx")
    edit(model_copy, lambda data: data["files"].__setitem__("model.int8.onnx", sha256(other_int8)))
    result = link(index, model_copy, tmp_path / "out.jsonl")  # it used to answer with garbage, exit 0
    assert result.exit_code == 1
    assert result.output == (f"mel: error: {model_copy}/{MANIFEST_NAME}: field 'files' does not match field "
                             "'identity', the model identity recorded at export (was a file replaced and its entry "
                             "edited?); export the model again\n")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("identity", ["recomputed", "removed"])
def test_a_replaced_variant_with_a_consistent_manifest_is_not_the_index_model(built, model_copy, other_int8,
                                                                               tmp_path, identity):
    _, index = built
    shutil.copy(other_int8, model_copy / "model.int8.onnx")

    def change(data):
        data["files"]["model.int8.onnx"] = sha256(other_int8)
        if identity == "recomputed":
            data["identity"] = model_identity(data["files"])
        else:
            data.pop("identity")  # as a folder of an older mel: the identity is computed from the files
    edit(model_copy, change)
    result = link(index, model_copy, tmp_path / "out.jsonl")
    assert result.exit_code == 1
    assert f"mel: error: {index}: the index was built with model " in result.output
    assert f"but {model_copy} is model {ModelFolder.open(model_copy).identity[:12]}…" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_the_untouched_model_still_links(built, model_copy, tmp_path):
    _, index = built
    assert link(index, model_copy, tmp_path / "out.jsonl").exit_code == 0


def embed(model: Path):
    return CliRunner().invoke(main, ["model", "embed", "--model", str(model), "-q"], input="Paris\n")


MANIFEST_CASES = {
    "max_length 100000": (lambda d: d.update(max_length=100000),
                          "field 'max_length' is 100000, expected an integer from 8 to 128"),
    "max_length 4": (lambda d: d.update(max_length=4), "field 'max_length' is 4, expected an integer from 8 to 128"),
    "max_length '64'": (lambda d: d.update(max_length="64"),
                        "field 'max_length' is '64', expected an integer from 8 to 128"),
    "special id 'x'": (lambda d: d["special_ids"].update(pad="x"),
                       "field 'special_ids.pad' is 'x', expected a token id"),
    "special id 1.0": (lambda d: d["special_ids"].update(start=1.0), "field 'special_ids.start' is 1.0"),
    "marker id out of range": (lambda d: d.update(marker_id=10**9), "field 'marker_id' is 1000000000, expected"),
    "wrong dim": (lambda d: d.update(dim=31), "field 'dim' is 31, but config.hidden_size is 32"),
    "unknown precision": (lambda d: d.update(precisions=["fp32", "int4"]), "field 'precisions' is ['fp32', 'int4']"),
    "file outside the folder": (lambda d: d["files"].update({"../x": "0" * 64}), "field 'files' names '../x'"),
    "checksum not the fp32 graph's": (lambda d: d.update(checksum="0" * 64), "field 'checksum' differs from files"),
    "missing field": (lambda d: d.pop("special_ids"), "field 'special_ids' is missing"),
    "special ids without pad": (lambda d: d.update(special_ids={"start": 0, "end": 2, "padding": 1}),
                                "field 'special_ids' needs start, end and pad"),
    "pooling": (lambda d: d.update(pooling="max"), "field 'pooling' is 'max', expected one of mean, cls, pooler"),
    "auto names a missing variant": (lambda d: d.update(auto={"cpu": "fp16"}), "field 'auto' is {'cpu': 'fp16'}"),
    "auto for an unknown device": (lambda d: d.update(auto={"tpu": "fp32"}), "field 'auto' is {'tpu': 'fp32'}"),
    "variants not objects": (lambda d: d.update(variants={"int8": 1}), "field 'variants' is not an object"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_malformed_manifest_fields_are_one_error_line(model_copy, case):
    change, message = MANIFEST_CASES[case]
    edit(model_copy, change)
    result = embed(model_copy)
    assert result.exit_code == 1
    assert result.output.startswith(f"mel: error: {model_copy}/{MANIFEST_NAME}: {message}"), result.output
    assert result.output.count("\n") == 1


def test_a_dim_that_is_not_the_graph_s_is_refused(model_copy):
    edit(model_copy, lambda d: (d.update(dim=31), d["config"].update(hidden_size=31)))
    result = embed(model_copy)
    assert result.exit_code == 1
    assert result.output == (f"mel: error: {model_copy}/model.int8.onnx: the graph gives vectors of shape "
                             f"['batch', 32], but {MANIFEST_NAME} field 'dim' says 31\n")


def consistent(folder: Path, name: str):
    """A tamperer's edit: the file's new sha256, and the identity recomputed to match."""
    def change(data):
        data["files"][name] = sha256(folder / name)
        data["identity"] = model_identity(data["files"])
    return change


def test_a_broken_tokenizer_with_a_matching_checksum_is_one_error_line(model_copy):
    tokenizer = model_copy / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:-200])
    edit(model_copy, consistent(model_copy, "tokenizer.json"))
    result = embed(model_copy)
    assert result.exit_code == 1
    assert result.output.startswith(f"mel: error: {tokenizer}: not a readable tokenizer (")
    assert result.output.count("\n") == 1


def test_a_tokenizer_whose_marker_is_another_token_is_refused(model_copy):
    tokenizer = model_copy / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[M]"', '"[X]"'))
    edit(model_copy, consistent(model_copy, "tokenizer.json"))
    result = embed(model_copy)
    assert result.exit_code == 1
    assert result.output.startswith(f"mel: error: {tokenizer}: the marker '[M]' is token None, but {MANIFEST_NAME} "
                                    "field 'marker_id' says ")
