"""mel.encoding's Encoder: a CUDA run whose CUDA provider cannot start is an error, not a slow CPU run."""

from __future__ import annotations

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
