"""mel.encoding's Encoder: automatic batch sizes, and a CUDA run whose CUDA provider cannot start is an error."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import mel.encoding
from mel.cli import main
from mel.encoding import Encoder
from mel.errors import ModelError
from mel.models import ModelFolder

pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")


@pytest.fixture()
def cuda_chosen(monkeypatch):
    # As on a GPU machine whose CUDA libraries are missing: the device resolves to CUDA, and
    # onnxruntime (here a CPU build) creates the session on its CPU provider instead.
    monkeypatch.setattr(mel.encoding, "choose_device", lambda device: "cuda")


@pytest.mark.parametrize(("device", "said"), [("cuda", "--device cuda: "),
                                              ("auto", "--device auto chose CUDA (a GPU is present), but: ")])
def test_a_cuda_session_that_fell_back_to_cpu_is_refused(tiny_model, cuda_chosen, device, said):
    with pytest.raises(ModelError) as caught:
        Encoder(ModelFolder.open(tiny_model), device=device, precision="fp32")
    assert str(caught.value).startswith(said + "onnxruntime could not start its CUDA provider")
    assert "--device cpu" in str(caught.value)


def test_the_command_line_says_it_in_one_line(tiny_model, cuda_chosen):
    result = CliRunner().invoke(main, ["model", "embed", "--model", str(tiny_model), "--device", "cuda",
                                       "--precision", "fp32"], input="Paris\n")
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("mel: error:")]
    assert errors and errors[0].startswith("mel: error: --device cuda: onnxruntime could not start its CUDA")
    assert "Traceback" not in result.output


def test_cpu_sessions_are_untouched(tiny_model):
    encoder = Encoder(ModelFolder.open(tiny_model), device="cpu", precision="fp32")
    assert encoder.session.get_providers() == ["CPUExecutionProvider"]
    assert encoder.encode_texts(["Paris"]).shape == (1, encoder.dim)


def _calls(encoder: Encoder, sequences) -> list[tuple[int, int]]:
    """(rows, padded width) of each onnxruntime call `encode_ids` makes."""
    calls = []
    run = encoder.session.run

    def counting(names, feeds):
        calls.append(feeds["input_ids"].shape)
        return run(names, feeds)

    encoder.session = type("Counted", (), {"run": staticmethod(counting)})()
    encoder.encode_ids(sequences)
    return calls


def test_automatic_cpu_batches_hold_about_a_fixed_number_of_padded_tokens(tiny_model):
    folder = ModelFolder.open(tiny_model)
    auto = Encoder(folder, device="cpu", precision="fp32")
    assert auto.batch_size is None and auto.group_size == mel.encoding.AUTO_MAX_TEXTS
    long_ids, short_ids = [2] + [7] * 62 + [3], [2, 7, 3]
    calls = _calls(auto, [long_ids] * 100 + [short_ids] * 600)
    budget = mel.encoding.CPU_BATCH_TOKENS
    assert all(rows * width <= budget for rows, width in calls)
    assert (mel.encoding.AUTO_MAX_TEXTS, 3) in calls  # short texts: the text cap, not the tokens
    assert (budget // 64, 64) in calls  # 64-token texts: as many as the budget holds
    assert sum(rows for rows, _ in calls) == 700


def test_a_given_batch_size_is_kept_and_the_embeddings_do_not_depend_on_it(tiny_model):
    folder = ModelFolder.open(tiny_model)
    texts = ["paris", "the city of the river and the king " * 20, "rome"] * 40
    fixed = Encoder(folder, device="cpu", precision="fp32", batch_size=7)
    assert {rows for rows, _ in _calls(fixed, fixed.tokens.texts(texts))} == {7, 1}
    auto = Encoder(folder, device="cpu", precision="fp32")
    assert np.allclose(fixed.encode_texts(texts), auto.encode_texts(texts), atol=1e-6)
