"""A short training run on data where context decides: it learns, and its outputs work downstream."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from mel.cli import main
from mel.encoding import Encoder
from mel.exporters.checkpoints import load_checkpoint
from mel.mentions import MentionSpan
from mel.models import ModelFolder
from mel.training.loop import train
from tests.mel.training.train_helpers import LABELS, entities, fast_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(synthetic, small_checkpoint, tmp_path_factory):
    kb, links, held_out = synthetic
    run = tmp_path_factory.mktemp("run") / "run"
    settings = fast_settings(kb, links, small_checkpoint, run, steps_first=60, steps=60, eval=f"jsonl:{held_out}",
                             checkpoint_every=1000, log_every=10)
    return train(settings), settings


def test_recall_rises_well_above_the_untrained_model(trained):
    result, _ = trained
    baseline, *rounds = result.history
    assert baseline["round"] == 0 and [r["round"] for r in rounds] == [1, 2]
    before, after = baseline["eval"]["R@1"], rounds[-1]["eval"]["R@1"]
    # Each label is shared by 4 entities: without the context, R@1 would be about 1/4.
    assert after >= 0.8 and after >= before + 0.3, (before, after)
    assert rounds[-1]["eval"]["R@10"] >= rounds[-1]["eval"]["R@1"]
    assert rounds[-1]["eval"]["mentions"] == 96 and rounds[-1]["eval"]["in_kb"] == 1.0


def test_loss_decreases(trained):
    result, settings = trained
    first, second = result.history[1], result.history[2]
    assert first["loss_last"] < first["loss_first"]
    assert second["loss"] < first["loss"]
    log = [orjson.loads(line) for line in (settings.out / "train-log.jsonl").read_bytes().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "steps"]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert [r["round"] for r in log if r["event"] == "round"] == [1, 2]
    mining = [r for r in log if r["event"] == "mining"]
    assert [m["mentions"] for m in mining] == [400, 400]  # 60 steps × 8 > 400: each round takes all once


def test_the_run_folder_holds_a_mel_model_and_a_hugging_face_checkpoint(trained, tmp_path):
    result, settings = trained
    model = ModelFolder.open(result.model)
    assert model.manifest.pooling == "mean" and model.manifest.precisions == ("fp32",)
    # The checkpoint exports through `mel model export` to the same ONNX model.
    cli = CliRunner().invoke(main, ["model", "export", str(result.checkpoint), "-o", str(tmp_path / "again"),
                                    "--precision", "int8"])
    assert cli.exit_code == 0, cli.output
    again = ModelFolder.open(tmp_path / "again")
    assert again.manifest.checksum == model.manifest.checksum
    assert again.manifest.pooling == "mean" and again.manifest.marker_id == model.manifest.marker_id
    transformers = pytest.importorskip("transformers")
    assert type(transformers.BertModel.from_pretrained(result.checkpoint)).__name__ == "BertModel"
    weights = load_checkpoint(result.checkpoint)
    assert weights.config.vocab_size == model.manifest.config["vocab_size"]


def test_the_exported_model_links_ambiguous_labels_by_context(trained):
    result, _ = trained
    encoder = Encoder(ModelFolder.open(result.model), precision="fp32")
    label = LABELS[0]
    topics = [e["topic"] for e in entities() if e["label"] == label]
    vectors = encoder.encode_entities([label] * len(topics), [f"the {t} {label}" for t in topics])
    texts = [f"the of {topic} and {label} was in the" for topic in topics]
    spans = [MentionSpan(text, text.index(label), text.index(label) + len(label)) for text in texts]
    mentions = encoder.encode_mentions(spans)
    assert (np.argmax(mentions @ vectors.T, axis=1) == np.arange(len(topics))).all()


def test_index_build_accepts_the_trained_model(trained, synthetic, tmp_path):
    result, _ = trained
    kb, _, _ = synthetic
    cli = CliRunner().invoke(main, ["index", "build", "--kb", str(kb), "--model", str(result.model), "-o",
                                    str(tmp_path / "index"), "--precision", "fp32", "-q"])
    assert cli.exit_code == 0, cli.output


def test_a_rounds_recall_is_what_mel_eval_reports(trained, synthetic, tmp_path):
    """One evaluator: the last round's R@1/R@10 equal `mel eval` on the same set, model and KB index."""
    result, _ = trained
    kb, _, held_out = synthetic
    run = CliRunner().invoke
    index = tmp_path / "idx"
    built = run(main, ["index", "build", "--kb", str(kb), "--model", str(result.model), "--precision", "fp32",
                       "--exact", "-o", str(index), "-q"])
    assert built.exit_code == 0, built.output
    report = tmp_path / "r.json"
    # a round evaluates the bi-encoder alone: the index's context view, not the fused linker
    evaluated = run(main, ["eval", "jsonl", str(held_out), "--index", str(index), "--method", "biencoder",
                           "--precision", "fp32", "--exact", "--k", "1,10", "--report", str(report), "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    micro = orjson.loads(report.read_bytes())["results"]["micro"]
    last = result.history[-1]["eval"]
    assert micro["mentions"] == last["mentions"] == 96
    assert (round(micro["R@1"], 6), round(micro["R@10"], 6)) == (last["R@1"], last["R@10"])
