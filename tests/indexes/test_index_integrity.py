"""An index is checked when it is opened, not trusted: files changed in place (sizes kept), values out of
range, and manifest names that lead out of the folder are refused by link and eval, not answered from."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.errors import ArtifactError
from mel.indexes import Index, read_manifest, verify

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def index_copy(tree_index, tmp_path):
    folder = tmp_path / "index"
    shutil.copytree(tree_index.folder, folder)
    return folder


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def record_checksum(folder: Path, shard: int | None, name: str) -> None:
    """What a tamperer does next: put the changed file's sha256 and size in the manifest."""
    data = ((folder if shard is None else folder / f"shard-{shard:05d}") / name).read_bytes()

    def change(manifest):
        files = manifest["files"] if shard is None else manifest["shards"][shard]["files"]
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    edit_manifest(folder, change)


def rewrite_npy(path: Path, change) -> None:
    """Change an array in place, its size kept."""
    array = np.load(path)
    size = path.stat().st_size
    change(array)
    np.save(path, array)
    assert path.stat().st_size == size


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10
    path.write_bytes(bytes(data))


TAMPERING = {
    "every QID set to 42": ("shard-00001/qids.npy", lambda p: rewrite_npy(p, lambda a: a.fill(42))),
    "QID set file": ("qids.npy", lambda p: rewrite_npy(p, lambda a: a.__setitem__(slice(None), a[::-1]))),
    "NaN vectors": ("shard-00002/scann/dataset.npy", lambda p: rewrite_npy(p, lambda a: a.__setitem__(5, np.nan))),
    "flipped byte in the ScaNN partitioner": ("shard-00000/scann/serialized_partitioner.pb", flip_byte),
    "flipped byte in the ScaNN hashed dataset": ("shard-00003/scann/hashed_dataset.npy", flip_byte),
    "labels changed": ("shard-00001/labels.json", lambda p: p.write_text(p.read_text().replace("«3»", "«4»"))),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_file_changed_in_place_is_refused_at_open(index_copy, case):
    name, tamper = TAMPERING[case]
    path = index_copy / name
    size = path.stat().st_size
    tamper(path)
    assert path.stat().st_size == size  # only the checksum can tell
    with pytest.raises(ArtifactError) as caught:
        Index(index_copy)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "checksum mismatch" in message or "not a finite unit vector" in message
    assert f"`mel index verify {index_copy}` lists every problem" in message


def test_no_verify_skips_the_checksums_but_not_the_sizes(index_copy):
    path = index_copy / "shard-00001" / "labels.json"
    path.write_text(path.read_text().replace("«3»", "«4»"))
    assert Index(index_copy, verify=False).entry(2500 + 3).label == "entity 2503 «4»"
    path.write_text(path.read_text() + " ")
    with pytest.raises(ArtifactError, match="bytes, the manifest says"):
        Index(index_copy, verify=False)


def test_nan_vectors_are_refused_even_with_a_matching_checksum(index_copy):
    rewrite_npy(index_copy / "shard-00002" / "scann" / "dataset.npy", lambda a: a.__setitem__(7, np.inf))
    record_checksum(index_copy, 2, "scann/dataset.npy")
    with pytest.raises(ArtifactError, match=r"dataset\.npy: vector of entry row 7 is not a finite unit vector"):
        Index(index_copy)
    assert any("row 7 is not a finite unit vector" in p for p in verify(index_copy, sample=0).problems)


@pytest.mark.parametrize("file, change, message", [
    ("shard-00000/qids.npy", lambda a: a.__setitem__(3, 0), "a QID number below 1"),
    ("shard-00000/qids.npy", lambda a: a.__setitem__(3, 10**12), "QIDs missing from"),
    ("qids.npy", lambda a: a.__setitem__(slice(0, 2), a[1::-1]), "not distinct positive numbers in order"),
    ("shard-00000/kinds.npy", lambda a: a.__setitem__(0, 7), "code outside the manifest's vocabulary"),
])
def test_table_values_out_of_range_are_refused_even_unverified(index_copy, file, change, message):
    rewrite_npy(index_copy / file, change)
    shard, _, name = file.rpartition("/")
    record_checksum(index_copy, int(shard[-5:]) if shard else None, name)
    for verified in (True, False):
        with pytest.raises(ArtifactError, match=message):
            Index(index_copy, verify=verified)


@pytest.mark.parametrize("case", ["dot-dot shard", "absolute file", "dot-dot file", "dot file", "vectors path"])
def test_manifest_names_must_stay_inside_the_folder(index_copy, tmp_path, case):
    outside = tmp_path / "outside"
    shutil.copytree(index_copy / "shard-00000", outside)

    def change(data):
        shard = data["shards"][0]
        if case == "dot-dot shard":
            shard["name"] = "../outside"
        elif case == "absolute file":
            shard["files"][str(outside / "qids.npy")] = shard["files"].pop("qids.npy")
        elif case == "dot-dot file":
            shard["files"]["../../outside/qids.npy"] = shard["files"].pop("qids.npy")
        elif case == "dot file":
            shard["files"]["./qids.npy"] = shard["files"].pop("qids.npy")
        else:
            shard["vectors"] = "../../outside/scann/dataset.npy"
    edit_manifest(index_copy, change)
    for call in (Index, read_manifest, verify):
        with pytest.raises(ArtifactError, match="is not a plain relative path inside the index folder"):
            call(index_copy)
    result = CliRunner().invoke(main, ["index", "verify", str(index_copy)])  # it used to say OK
    assert result.exit_code == 1 and result.output.startswith("mel: error: ") and "plain relative" in result.output


def test_a_symlink_out_of_the_folder_is_refused(index_copy, tmp_path):
    outside = tmp_path / "copy-of-qids.npy"
    shutil.copy(index_copy / "shard-00000" / "qids.npy", outside)  # same bytes: the checksum matches
    (index_copy / "shard-00000" / "qids.npy").unlink()
    (index_copy / "shard-00000" / "qids.npy").symlink_to(outside)
    for call in (Index, verify):
        with pytest.raises(ArtifactError, match=f"qids.npy leads outside the index folder \\(to {outside}\\)"):
            call(index_copy)


@pytest.mark.scann
def test_a_scann_asset_path_must_be_listed_and_inside(index_copy, tmp_path):
    assets = index_copy / "shard-00000" / "scann" / "scann_assets.pbtxt"
    shutil.copy(index_copy / "shard-00000" / "scann" / "dataset.npy", tmp_path / "dataset.npy")
    assets.write_text(assets.read_text().replace('"dataset.npy"', f'"{tmp_path}/dataset.npy"'))
    record_checksum(index_copy, 0, "scann/scann_assets.pbtxt")
    index = Index(index_copy)  # the files match their (edited) manifest; ScaNN loads on the first search
    with pytest.raises(ArtifactError, match="is not a plain relative path inside the index folder"):
        index.search(np.ones((1, index.dim), dtype=np.float32), 5)


def test_query_encoding_must_be_known_and_given(index_copy, tiny_model):
    edit_manifest(index_copy, lambda data: data.__setitem__("query_encoding", "mention"))
    with pytest.raises(ArtifactError, match="unknown query_encoding 'mention'"):
        Index(index_copy)
    from mel.retrieval import EncoderSettings, Retriever

    edit_manifest(index_copy, lambda data: data.pop("query_encoding"))
    with pytest.raises(ArtifactError, match="query_encoding None is not one of context, string"):
        Retriever.open(index_copy, EncoderSettings(model=str(tiny_model)), allow_model_mismatch=True)


@pytest.fixture(scope="module")
def label_index(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "idx"
    result = CliRunner().invoke(main, ["index", "build", "--kb", str(DATA / "kb.jsonl"), "--kinds", "label",
                                       "--model", str(tiny_model), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_link_and_eval_refuse_a_tampered_index_and_no_verify_skips(label_index, tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(label_index, index)
    view = index / "views" / "string"
    qids = view / "shard-00000" / "qids.npy"
    rewrite_npy(qids, lambda a: a.fill(90))  # every entry now says Paris (Q90 is in the index)
    out = tmp_path / "out.jsonl"
    for command in (["link", str(DATA / "docs.jsonl"), "-o", str(out)], ["eval", "jsonl", str(DATA / "docs.jsonl")],
                    ["eval", "jsonl", str(DATA / "docs.jsonl"), "--method", "labels"]):
        result = CliRunner().invoke(main, [*command, "--index", str(index), "-q"])
        assert result.exit_code == 1, result.output
        assert result.output == (f"mel: error: {qids}: checksum mismatch (the file was changed or damaged); "
                                 f"`mel index verify {index}` lists every problem\n")  # the index, not its view
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    result = CliRunner().invoke(main, ["link", str(DATA / "docs.jsonl"), "-o", str(out), "--index", str(index),
                                       "--method", "labels", "-q", "--no-verify"])
    assert result.exit_code == 0, result.output  # trusted: answered from the tables as they are
    linked = [m["qid"] for line in out.read_text().splitlines() for m in orjson.loads(line)["mentions"]]
    assert linked and set(linked) == {"Q90"}
