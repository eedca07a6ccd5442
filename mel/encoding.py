"""The encoder every stage uses: token ids in, L2-normalised embeddings out.

Inputs are sorted by length and padded per batch, so short inputs never pay
for long ones. On CPU a batch is sized by its padded tokens unless a batch size
is given: batches of about 1,536 tokens (at most 64 texts) ran 13-33% faster
than a fixed 64 texts for e5-small and the LEALLA-small shape at 64 and 128
tokens a text (the activations stay in cache; bench/bench_encoder.py measures
the sweep); short texts keep 64 a batch, as larger ones did not pay.

CUDA is used when asked for (or with device "auto") and onnxruntime has it;
the precision variant follows the device unless given: what the model's export
measured fastest at the accuracy bar (int8 or fp32 on CPU, fp16 on CUDA;
exporters/variants.py), falling back to fp32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mel.errors import ModelError
from mel.mentions import MentionSpan, MentionTokenizer
from mel.models import ModelFolder
from mel.runtime import DEVICES, cuda_devices, load_onnxruntime, preload_cuda_libraries


def choose_device(device: str) -> str:
    """"cpu" or "cuda"; auto is CUDA when onnxruntime has it and the driver reports a GPU."""
    if device not in DEVICES:
        raise ModelError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
    if device == "cpu":
        return device
    has_cuda = "CUDAExecutionProvider" in load_onnxruntime().get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ModelError("--device cuda: this onnxruntime has no CUDA support (pip uninstall -y onnxruntime && "
                         "pip install 'mel[gpu]'; `mel info` shows what is installed)")
    if device == "auto":
        return "cuda" if has_cuda and cuda_devices()[0] else "cpu"
    return device


CPU_BATCH_TOKENS = 1536  # padded tokens in an automatic CPU batch
AUTO_MAX_TEXTS = 64  # texts in an automatic batch, at most (more did not pay for short texts)
CUDA_BATCH_TEXTS = 64  # texts in an automatic CUDA batch


def default_threads() -> int:
    # onnxruntime scales with physical cores; hyper-threads add little to GEMM work.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Encoder:
    """An onnxruntime session over a model folder, with its tokenizers."""

    def __init__(self, model: ModelFolder, *, device: str = "auto", precision: str = "auto",
                 threads: int | None = None, batch_size: int | None = None, verify: bool = True):
        """`batch_size` None sizes batches automatically (by padded tokens on CPU); a number fixes
        the texts per onnxruntime call."""
        ort = load_onnxruntime()
        self.model = model
        self.manifest = model.manifest
        self.device = choose_device(device)
        if precision == "auto":
            # The export measured which variant is fastest at the accuracy bar (manifest "auto").
            wanted = self.manifest.auto.get(self.device) or ("int8" if self.device == "cpu" else "fp16")
            precision = wanted if wanted in self.manifest.precisions else "fp32"
        if self.device == "cuda" and precision == "int8":
            raise ModelError("int8 models run on CPU only (their QAttention kernels have no CUDA version); "
                             "use --precision fp16 or fp32 with --device cuda")
        self.precision = precision
        self.batch_size = batch_size
        # How many texts callers gather before handing them over (encode_ids batches them).
        self.group_size = batch_size or (AUTO_MAX_TEXTS if self.device == "cpu" else CUDA_BATCH_TEXTS)
        path = model.variant(precision, verify=verify)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.device == "cuda":
            preload_cuda_libraries(ort)
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: onnxruntime cannot load the model ({str(exc).splitlines()[0]})") from None
        if self.device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to CPU when its CUDA provider cannot start (CUDA or cuDNN
            # libraries missing or of the wrong version): a GPU run would then crawl on the CPU.
            chosen = "--device cuda" if device == "cuda" else "--device auto chose CUDA (a GPU is present), but"
            raise ModelError(f"{chosen}: onnxruntime could not start its CUDA provider (its CUDA or cuDNN "
                             "libraries did not load; onnxruntime's message above says which); "
                             "`mel info` shows what is installed, --device cpu runs on the CPU")
        model.check_graph(path, self.session.get_inputs(), self.session.get_outputs())
        self.tokens = MentionTokenizer(model.tokenizer(verify=verify), self.manifest)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def checksum(self) -> str:
        return self.manifest.checksum

    @property
    def identity(self) -> str:
        """What an index built with this model records and is compared with (mel.models)."""
        return self.model.identity

    def encode_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeddings of pre-tokenised inputs (with special tokens), in input order."""
        out = np.empty((len(sequences), self.dim), dtype=np.float32)
        if not len(sequences):
            return out
        lengths = np.array([len(s) for s in sequences])
        order = np.argsort(lengths, kind="stable")
        pad = self.manifest.special_ids["pad"]
        for chosen in self._batches(lengths[order], order):
            width = int(lengths[chosen].max())
            ids = np.full((len(chosen), width), pad, dtype=np.int64)
            mask = np.zeros((len(chosen), width), dtype=np.int64)
            for row, i in enumerate(chosen):
                seq = sequences[i]
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            out[chosen] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def _batches(self, sorted_lengths: np.ndarray, order: np.ndarray):
        """Runs of `order` (sorted by length), one per onnxruntime call."""
        if self.batch_size or self.device != "cpu":
            size = self.group_size
            for lo in range(0, len(order), size):
                yield order[lo : lo + size]
            return
        lo = 0
        while lo < len(order):
            # Ascending lengths: a batch's padded width is its last row's length, so `fits` is
            # True up to some row and False after it.
            rows = np.arange(1, min(AUTO_MAX_TEXTS, len(order) - lo) + 1)
            fits = rows * sorted_lengths[lo : lo + len(rows)] <= CPU_BATCH_TOKENS
            count = max(1, int(fits.sum()))
            yield order[lo : lo + count]
            lo += count

    def encode_mentions(self, spans: Sequence[MentionSpan]) -> np.ndarray:
        return self.encode_ids(self.tokens.mentions(spans))

    def encode_entities(self, labels: Sequence[str], descriptions: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.tokens.entities(labels, descriptions))

    def encode_texts(self, texts: Sequence[str], role: str | None = None) -> np.ndarray:
        return self.encode_ids(self.tokens.texts(texts, role))
