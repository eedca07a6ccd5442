"""A small, self-contained BERT in torch whose state-dict names are Hugging Face's.

`BertModel` here has exactly the parameter names of `transformers.BertModel`
(embeddings.word_embeddings.weight, encoder.layer.0.attention.self.query.weight,
…, pooler.dense.weight), so `BertWeights` map onto it one to one and back, and
no transformers install is needed to train. `BiEncoder` adds what the ONNX
graph does (exporters/bert_onnx.py): token type 0, positions from the config's
offset, pooling (pooler / cls / mean) and L2 normalisation; tests check both
against transformers and against the exported ONNX model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mel.exporters.checkpoints import BertConfig, BertWeights


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(max(1, cfg.type_vocab_size), cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.position_offset = cfg.position_offset

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(self.position_offset, self.position_offset + length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig, dropout: float):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return context.transpose(1, 2).reshape(batch, length, hidden)


class BertResidualOutput(nn.Module):
    """Dense projection back to the hidden size, dropout, residual, LayerNorm: BERT's
    `attention.output` (from the hidden size) and `output` (from the intermediate size)."""

    def __init__(self, cfg: BertConfig, in_features: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig, dropout: float):
        super().__init__()
        self.self = BertSelfAttention(cfg, dropout)
        self.output = BertResidualOutput(cfg, cfg.hidden_size, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT and the ONNX graph use


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig, dropout: float):
        super().__init__()
        self.attention = BertAttention(cfg, dropout)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertResidualOutput(cfg, cfg.intermediate_size, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig, dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg, dropout) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """Parameter names as in transformers.BertModel (pooler only when the weights have one)."""

    def __init__(self, cfg: BertConfig, dropout: float = 0.1, with_pooler: bool = True):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg, dropout)
        self.encoder = BertEncoder(cfg, dropout)
        self.pooler = BertPooler(cfg) if with_pooler else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last hidden states, (batch, length, hidden)."""
        keep = attention_mask.bool()[:, None, None, :]  # (batch, 1, 1, length): which keys to attend to
        return self.encoder(self.embeddings(input_ids), keep)


class BiEncoder(nn.Module):
    """The shared mention/entity encoder: ids -> pooled, L2-normalised embedding."""

    def __init__(self, cfg: BertConfig, pooling: str, dropout: float = 0.1, with_pooler: bool = True):
        super().__init__()
        if pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}")
        if pooling == "pooler" and not with_pooler:
            raise ValueError("pooling 'pooler' needs pooler weights")
        self.bert = BertModel(cfg, dropout, with_pooler)
        self.pooling = pooling
        if self.bert.pooler is not None and pooling != "pooler":
            # Kept for the round trip to the checkpoint, but unused: frozen, so
            # DistributedDataParallel sees no parameter without a gradient.
            self.bert.pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids, attention_mask)
        if self.pooling == "pooler":
            assert self.bert.pooler is not None  # the constructor checks
            pooled = self.bert.pooler(hidden)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask[..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(pooled.float(), dim=-1, eps=1e-12)


def encoder_from_weights(weights: BertWeights, pooling: str, dropout: float = 0.1) -> BiEncoder:
    """A BiEncoder (on the CPU) holding copies of `weights` as float32."""
    config = weights.config
    type_rows = weights.arrays["embeddings.token_type_embeddings.weight"].shape[0]
    if type_rows != config.type_vocab_size:  # a checkpoint without token types gets one zero row
        config = replace(config, type_vocab_size=type_rows)
    with torch.device("meta"):  # no random initialisation: every parameter comes from the weights
        model = BiEncoder(config, pooling, dropout, with_pooler=weights.has_pooler)
    names = list(model.bert.state_dict())
    missing = [name for name in names if name not in weights.arrays]
    if missing:
        raise ValueError(f"{weights.source}: weights lack {missing[0]}")
    loaded = {name: torch.from_numpy(np.array(weights.arrays[name], dtype=np.float32)) for name in names}
    model.bert.load_state_dict(loaded, strict=True, assign=True)
    return model


def weights_from_encoder(model: BiEncoder, source: str = "") -> BertWeights:
    """The encoder's weights as float32 NumPy arrays named as in BertModel."""
    arrays = {name: tensor.detach().to("cpu", torch.float32).numpy().copy()
              for name, tensor in model.bert.state_dict().items()}
    return BertWeights(config=model.bert.config, arrays=arrays, source=source)


def pad_batch(sequences: Sequence[np.ndarray] | np.ndarray, lengths: np.ndarray, pad_id: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids (fixed-width table or ragged lists) -> (ids, mask) as wide as the longest row."""
    width = int(lengths.max()) if len(lengths) else 1
    if isinstance(sequences, np.ndarray) and sequences.ndim == 2:  # a table already padded with pad_id
        ids = sequences[:, :width].astype(np.int64)
    else:
        ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
        for row, (seq, length) in enumerate(zip(sequences, lengths)):
            ids[row, :length] = seq[:length]
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return torch.from_numpy(ids).to(device, non_blocking=True), torch.from_numpy(mask).to(device, non_blocking=True)


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op on CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def embed_tokens(model: BiEncoder, tokens: np.ndarray | Sequence[Sequence[int]], lengths: np.ndarray, pad_id: int,
                 device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Embeddings (float32, unit length) of token rows (a padded table or
    lists of ids), in row order; rows are sorted by length so short rows are
    batched with short rows."""
    was_training = model.training
    model.eval()
    out = np.empty((len(lengths), model.bert.config.hidden_size), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chosen = tokens[rows] if isinstance(tokens, np.ndarray) else [np.asarray(tokens[i]) for i in rows]
            ids, mask = pad_batch(chosen, lengths[rows], pad_id, device)
            with autocast(device):
                vectors = model(ids, mask)
            out[rows] = vectors.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out

