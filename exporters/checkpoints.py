"""Read BERT-family checkpoints (Hugging Face folders) into plain NumPy weights.

No torch is needed for safetensors checkpoints; `pytorch_model.bin` is read
with torch when it is installed. Hub ids are resolved in the local Hugging Face
cache only: mel never downloads.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mel.errors import ModelError

# Architectures whose weights follow BertModel's layout.
SUPPORTED_ARCHITECTURES = {"BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
                           "LaBSE", "XLMRobertaModel"}
SUPPORTED_MODEL_TYPES = {"bert", "xlm-roberta"}

_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.")
_RENAMES = {".gamma": ".weight", ".beta": ".bias"}
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    has_pooler: bool = True
    # XLM-R numbers positions from padding_idx + 1; BERT from 0.
    position_offset: int = 0
    model_type: str = "bert"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BertConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_hf(self) -> dict:
        """config.json for transformers' BertModel; the inverse of `from_hf`."""
        xlmr = self.model_type == "xlm-roberta"
        return {
            "architectures": ["XLMRobertaModel" if xlmr else "BertModel"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "pad_token_id": self.position_offset - 1 if xlmr else 0,
        }

    @classmethod
    def from_hf(cls, data: dict, source: str) -> BertConfig:
        model_type = data.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelError(f"{source}: unsupported model_type '{model_type}' (mel exports BERT-family encoders: "
                             "LEALLA, LaBSE, e5, BERT)")
        act = data.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_python"):
            raise ModelError(f"{source}: unsupported hidden_act '{act}' (only gelu)")
        try:
            return cls(
                vocab_size=int(data["vocab_size"]),
                hidden_size=int(data["hidden_size"]),
                num_hidden_layers=int(data["num_hidden_layers"]),
                num_attention_heads=int(data["num_attention_heads"]),
                intermediate_size=int(data["intermediate_size"]),
                max_position_embeddings=int(data.get("max_position_embeddings", 512)),
                type_vocab_size=int(data.get("type_vocab_size", 2)),
                layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
                hidden_act="gelu",
                position_offset=int(data.get("pad_token_id", 1)) + 1 if model_type == "xlm-roberta" else 0,
                model_type=model_type,
            )
        except KeyError as exc:
            raise ModelError(f"{source}: config.json lacks field {exc}") from None


@dataclass
class BertWeights:
    """Float32 arrays named as in Hugging Face's BertModel state dict."""

    config: BertConfig
    arrays: dict[str, np.ndarray] = field(repr=False)
    source: str = ""

    def check(self) -> None:
        cfg = self.config
        expected = {
            "embeddings.word_embeddings.weight": (cfg.vocab_size, cfg.hidden_size),
            "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, cfg.hidden_size),
            "embeddings.LayerNorm.weight": (cfg.hidden_size,),
        }
        for i in range(cfg.num_hidden_layers):
            expected[f"encoder.layer.{i}.attention.self.query.weight"] = (cfg.hidden_size, cfg.hidden_size)
            expected[f"encoder.layer.{i}.intermediate.dense.weight"] = (cfg.intermediate_size, cfg.hidden_size)
            expected[f"encoder.layer.{i}.output.dense.weight"] = (cfg.hidden_size, cfg.intermediate_size)
        for name, shape in expected.items():
            if name not in self.arrays:
                raise ModelError(f"{self.source}: weight '{name}' is missing (not a BERT-family checkpoint?)")
            if tuple(self.arrays[name].shape) != shape:
                raise ModelError(f"{self.source}: weight '{name}' has shape {tuple(self.arrays[name].shape)}, "
                                 f"config says {shape}")

    @property
    def has_pooler(self) -> bool:
        return "pooler.dense.weight" in self.arrays


def normalise_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip task-model prefixes (bert., roberta.) and old gamma/beta names; drop heads."""
    out = {}
    for name, value in state.items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        for old, new in _RENAMES.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        if name.startswith(("embeddings.", "encoder.", "pooler.")) and not name.endswith("position_ids"):
            out[name] = value
    return out


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file with NumPy alone (bf16 is widened to float32)."""
    path = Path(path)
    with open(path, "rb") as handle:
        header_len = struct.unpack("<Q", handle.read(8))[0]
        if header_len > 100_000_000:
            raise ModelError(f"{path}: not a safetensors file (header length {header_len})")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            raise ModelError(f"{path}: not a safetensors file (unreadable header)") from None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if end > len(data):
            raise ModelError(f"{path}: tensor '{name}' runs past the end of the file (truncated?)")
        raw = np.asarray(data[start:end])
        dtype = info["dtype"]
        if dtype == "BF16":
            array = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = raw.view(_SAFETENSORS_DTYPES[dtype])
        else:
            raise ModelError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ModelError(f"{path}: pytorch_model.bin needs torch (pip install 'mel[train]'), "
                         "or convert the checkpoint to safetensors") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def resolve_checkpoint(source: str) -> Path:
    """A local folder, or a hub id (`org/name`) found in the local Hugging Face cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{source}: expected a checkpoint folder (with config.json), got a file")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        repo = hf_cache_dir() / ("models--" + source.replace("/", "--"))
        snapshots = repo / "snapshots"
        ref = repo / "refs" / "main"
        if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
            return snapshots / ref.read_text().strip()
        if snapshots.is_dir():
            candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
            if candidates:
                return candidates[-1]
        raise ModelError(
            f"'{source}' is neither a local folder nor in the Hugging Face cache ({hf_cache_dir()}); "
            f"on a machine with network run `huggingface-cli download {source}` and copy that cache here "
            "(or set HF_HOME), or pass the checkpoint folder itself"
        )
    raise ModelError(f"{source}: no such folder")


def read_config(folder: Path) -> tuple[BertConfig, dict]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder}: not a Hugging Face checkpoint (no config.json)")
    try:
        raw = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{config_path}: not valid JSON ({exc})") from None
    archs = raw.get("architectures") or []
    unsupported = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
    if archs and len(unsupported) == len(archs) and raw.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{config_path}: unsupported architecture {', '.join(archs)} "
                         "(mel exports BERT-family encoders: LEALLA, LaBSE, e5, BERT)")
    return BertConfig.from_hf(raw, str(config_path)), raw


def load_checkpoint(folder: Path) -> BertWeights:
    """Weights of a Hugging Face BERT-family folder (safetensors, sharded or not; or pytorch_model.bin)."""
    config, _ = read_config(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        state: dict[str, np.ndarray] = {}
        for f in files:
            state.update(read_safetensors(f))
    elif (folder / "pytorch_model.bin").is_file():
        state = _read_torch_bin(folder / "pytorch_model.bin")
    else:
        raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin")
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in normalise_names(state).items()}
    if "embeddings.token_type_embeddings.weight" not in arrays:
        arrays["embeddings.token_type_embeddings.weight"] = np.zeros((1, config.hidden_size), np.float32)
    has_pooler = "pooler.dense.weight" in arrays
    config = BertConfig.from_json({**config.to_json(), "has_pooler": has_pooler})
    weights = BertWeights(config=config, arrays=arrays, source=str(folder))
    weights.check()
    return weights
