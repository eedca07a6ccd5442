"""`mel train` on the command line: DaMuEL and Mewsli-9 inputs, help, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from mel.cli.errors import MelGroup
from mel.cli.train import train

DATA = Path(__file__).resolve().parents[2] / "data"


@click.group(cls=MelGroup)
def cli() -> None:
    """The command as `mel` registers it (errors as one line, exit code 1)."""


cli.add_command(train)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def damuel_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--kb", str(DATA / "damuel" / "es"), "--links", str(DATA / "damuel" / "es"), "--model", str(checkpoint),
            "-o", str(out), "--rounds", "1", "--neg", "2", "--k", "2", "--batch-size", "2", "--steps-first", "3",
            "--threads", "1", "--precision", "int8", "-q", *extra]


def test_help_has_an_example_and_every_option_is_explained():
    assert "Example:" in train.help
    assert all(param.help for param in train.params if isinstance(param, click.Option) and not param.hidden)
    result = invoke("--help")
    assert result.exit_code == 0 and "--first-round-negatives" in result.output


@pytest.mark.slow
def test_damuel_links_and_mewsli_eval(small_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = invoke(*damuel_args(small_checkpoint, out, "--eval", f"mewsli9:{DATA / 'mewsli' / 'es'}",
                                 "--first-round-negatives", "mention"))
    assert result.exit_code == 0, result.output
    assert "Training rounds" in result.output and "mel model export" in result.output
    # The fixture has links without qid and of DaMuEL's own origin: they are reported, not lost.
    assert "left out 1: link with origin 'damuel'" in result.output
    log = [orjson.loads(line) for line in (out / "train-log.jsonl").read_bytes().splitlines()]
    mining = next(r for r in log if r["event"] == "mining")
    assert mining["query_kind"] == "mention" and mining["mentions"] == 4  # 4 of the 5 links are in the KB
    evaluation = next(r for r in log if r["event"] == "round")["eval"]
    # mel eval's rule: the two mentions whose text is missing or does not match count as misses.
    assert evaluation["mentions"] == 6 and evaluation["in_kb"] == round(3 / 6, 6), evaluation
    assert (out / "model" / "model.int8.onnx").is_file()


@pytest.mark.parametrize("args,message", [
    (["--eval", "trec:x"], "--eval 'trec:x': expected mewsli9:DIR or jsonl:FILE"),
    (["--neg", "9"], "--neg 9 needs at least 10"),
    (["--lr-decay", "0"], "Invalid value for '--lr-decay'"),
])
def test_bad_options_give_one_clear_line(small_checkpoint, tmp_path, args, message):
    result = invoke(*damuel_args(small_checkpoint, tmp_path / "run", *args))
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_an_existing_run_is_not_overwritten_silently(small_checkpoint, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke(*damuel_args(small_checkpoint, out))
    assert result.exit_code == 1 and "already exists (use --resume" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_a_mel_model_folder_is_not_a_training_source(tiny_model, tmp_path):
    result = invoke(*damuel_args(tiny_model, tmp_path / "run"))
    assert result.exit_code == 1 and "cannot be fine-tuned" in result.output
