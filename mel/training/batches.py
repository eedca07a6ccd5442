"""Batches of one round: b mentions, each with its positive and `neg` negatives.

The order is a seeded permutation of the rank's round rows, a fresh one per
pass when a round has more steps than rows, so a step's batch is a pure
function of (seed, round, rank, step): a resumed run sees the same batches.
Entity windows are looked up by QID in the tokenised KB; every batch is cut
to the width of its longest row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mel.training.kb_store import KBStore
from mel.training.round_data import RoundData
from mel.training.torch_model import pad_batch


@dataclass
class Batch:
    """Mentions first, then entities, in one padded tensor (one forward pass)."""

    ids: torch.Tensor  # (b + b·(neg+1), width)
    mask: torch.Tensor
    mentions: int  # b
    gold_qids: torch.Tensor  # (b,)
    column_qids: torch.Tensor  # (b·(neg+1),): positive, then negatives, per mention


class RoundBatches:
    def __init__(self, data: RoundData, kb: KBStore, *, batch_size: int, seed: int, round_index: int,
                 rank: int, pad_id: int, device: torch.device):
        self.data = data
        self.kb = kb
        self.batch_size = batch_size
        self.seed = seed
        self.round_index = round_index
        self.rank = rank
        self.pad_id = pad_id
        self.device = device
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, self.round_index, self.rank, epoch])
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = rng.permutation(len(self.data))
        return self._orders[epoch]

    def rows(self, step: int) -> np.ndarray:
        """Round rows of the mentions in batch `step`."""
        positions = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(positions, len(self.data))
        return np.array([self._order(int(e))[o] for e, o in zip(epochs, offsets)], dtype=np.int64)

    def batch(self, step: int) -> Batch:
        rows = self.rows(step)
        gold = self.data.qids[rows].astype(np.int64)
        columns = np.concatenate([gold[:, None], self.data.negatives[rows]], axis=1).ravel()
        entity_rows = self.kb.rows_of(columns)
        if (entity_rows < 0).any():
            bad = int(columns[np.flatnonzero(entity_rows < 0)[0]])
            raise ValueError(f"{self.data.folder}: Q{bad} is not in the tokenised KB (work folder of another run?)")
        tokens = np.concatenate([self.data.tokens[rows], self.kb.tokens[entity_rows]])
        lengths = np.concatenate([self.data.lengths[rows], self.kb.lengths[entity_rows]]).astype(np.int64)
        ids, mask = pad_batch(tokens, lengths, self.pad_id, self.device)
        return Batch(ids, mask, len(rows), torch.from_numpy(gold).to(self.device),
                     torch.from_numpy(columns).to(self.device))
