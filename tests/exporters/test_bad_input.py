"""Bad checkpoints and damaged model folders: one clear line, non-zero exit, nothing half-written."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from mel.cli import main


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("mel: error: ")
    return lines[0]


def test_folder_that_is_no_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("model", "export", str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "no config.json" in error_line(result)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temporary folder left behind


def test_unsupported_architecture(tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    result = run("model", "export", str(folder), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "unsupported architecture GPT2LMHeadModel" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_missing_weights(tiny_checkpoint, tmp_path):
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "model.safetensors").unlink()
    result = run("model", "export", str(folder), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "no model.safetensors or pytorch_model.bin" in error_line(result)


def test_altered_and_truncated_model_onnx(tiny_model, tmp_path):
    for damage in ("flip", "truncate"):
        copy = tmp_path / damage
        shutil.copytree(tiny_model, copy)
        onnx_file = copy / "model.int8.onnx"
        data = bytearray(onnx_file.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 3]
        onnx_file.write_bytes(bytes(data))
        result = run("model", "embed", str(copy), input="hello\n")
        assert result.exit_code == 1
        line = error_line(result)
        assert "model.int8.onnx: checksum mismatch" in line


def test_not_a_model_folder(tmp_path):
    result = run("model", "info", str(tmp_path))
    assert result.exit_code == 1
    assert "not a mel model folder" in error_line(result)


def test_empty_stdin(tiny_model, tmp_path):
    out = tmp_path / "v.npy"
    result = run("model", "embed", str(tiny_model), "-o", str(out), input="")
    assert result.exit_code == 1
    assert "no input" in error_line(result)
    assert not out.exists()


def test_existing_output_needs_force(tiny_checkpoint, tiny_model):
    result = run("model", "export", str(tiny_checkpoint), "-o", str(tiny_model))
    assert result.exit_code == 1
    assert "already exists (use --force" in error_line(result)
