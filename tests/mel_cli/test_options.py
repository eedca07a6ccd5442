"""One CLI vocabulary: the encoder options read the same everywhere, and renamed options still work."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from mel.cli import main

ENCODING_COMMANDS = [("link",), ("eval", "jsonl"), ("eval", "mewsli9"), ("index", "build"), ("model", "embed")]
ENCODER_OPTIONS = ("--model", "--device", "--precision", "--threads", "--batch-size", "--quiet")


def command(path):
    found = main
    for name in path:
        found = found.commands[name]
    return found


def option(cmd: click.Command, name: str) -> click.Option:
    (found,) = [p for p in cmd.params if isinstance(p, click.Option) and name in p.opts]
    return found


@pytest.mark.parametrize("name", ENCODER_OPTIONS)
def test_encoder_options_have_one_name_default_and_help(name):
    forms = {(tuple(o.opts), o.default, o.help, getattr(o.type, "choices", None))
             for o in (option(command(path), name) for path in ENCODING_COMMANDS)}
    assert len(forms) == 1, forms


def test_tune_defaults_are_the_library_fit_settings():
    # `mel index tune` and fit_reranker() must fit the same model when given no options.
    from mel.fitting import FitSettings

    tune = command(("index", "tune"))
    for name in ("trees", "depth", "seed"):
        assert option(tune, f"--{name}").default == getattr(FitSettings(), name), name


def test_tune_names_its_refits_and_refuses_any_other(tmp_path):
    from mel.tuning import REFITS

    assert option(command(("index", "tune")), "--refit").type.choices == REFITS
    gold = tmp_path / "gold.jsonl"
    gold.write_text("")
    result = CliRunner().invoke(main, ["index", "tune", str(tmp_path), "--gold", str(gold), "--refit", "bogus"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "mel: error: Invalid value for '--refit': 'bogus' is not one of 'auto', 'trees', 'calibration'.")


def test_precision_means_which_variant_to_run_and_variants_which_to_write():
    for path in ENCODING_COMMANDS:
        assert option(command(path), "--precision").type.choices == ("auto", "fp32", "fp16", "int8")
    for path in [("model", "export"), ("train",)]:
        cmd = command(path)
        assert option(cmd, "--variants").help.startswith("Model variants to write")
        assert option(cmd, "--precision").hidden  # the old spelling, kept for a release


@pytest.mark.parametrize("path,old,new", [(("index", "build"), "--contexts", "--links"),
                                          (("alias", "build"), "--kb", "--links"),
                                          (("train",), "--k", "--neighbours"),
                                          (("model", "export"), "--precision", "--variants")])
def test_old_spellings_are_hidden_aliases(path, old, new):
    cmd = command(path)
    assert option(cmd, old).hidden and not option(cmd, new).hidden
    shown = CliRunner().invoke(main, [*path, "--help"]).output
    assert re.search(rf"^\s+{re.escape(new)}[ ,\n]", shown, re.M)
    assert not re.search(rf"^\s+{re.escape(old)}[ ,\n]", shown, re.M)


def test_an_old_spelling_works_and_says_so(tmp_path):
    docs = tmp_path / "train.jsonl"
    docs.write_text('{"lang": "es", "text": "París", "mentions": [{"start": 0, "end": 5, "qid": "Q90"}]}\n')
    result = CliRunner().invoke(main, ["alias", "build", "--kb", str(docs), "-o", str(tmp_path / "a"), "-q"])
    assert result.exit_code == 0, result.output
    assert "mel: note: --kb is now called --links" in result.stderr
    looked_up = CliRunner().invoke(main, ["alias", "lookup", str(tmp_path / "a"), "París"])
    assert '"qid":"Q90"' in looked_up.stdout


def test_usage_errors_read_mel_error(tmp_path):
    result = CliRunner().invoke(main, ["link", "--no-such-option"])
    assert result.exit_code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mel: error: No such option") and "--no-such-option" in last
    assert "Traceback" not in result.output
