"""The in-batch sampled softmax (thesis 4.2, 5.2).

A batch holds b mentions and, for each, its positive entity followed by its
`neg` negatives: b·(neg+1) entity columns, mention i's positive in column
i·(neg+1). Every mention is scored against every column (cosine times a fixed
logit multiplier) and the loss is the cross-entropy on its gold column.

One refinement: a column that holds the row's own gold entity somewhere else
(the same QID mined as another mention's negative, or the positive of another
mention of the same entity) is masked out of that row's softmax, since
pushing a mention away from its own entity contradicts the gold column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gold_columns(batch_size: int, negatives: int, device: torch.device | None = None) -> torch.Tensor:
    """Column of each mention's positive: 0, neg+1, 2(neg+1), …"""
    return torch.arange(batch_size, device=device) * (negatives + 1)


def in_batch_logits(mentions: torch.Tensor, entities: torch.Tensor, multiplier: float,
                    gold_qids: torch.Tensor | None = None, column_qids: torch.Tensor | None = None) -> torch.Tensor:
    """(b, b·(neg+1)) logits: multiplier × cosine (inputs are unit vectors).

    With `gold_qids` (b,) and `column_qids` (b·(neg+1),), columns holding a
    row's gold QID other than its gold column get -inf.
    """
    logits = multiplier * (mentions.float() @ entities.float().T)
    if gold_qids is not None and column_qids is not None:
        b, columns = logits.shape
        per_mention = columns // b
        same = gold_qids[:, None] == column_qids[None, :]
        same[torch.arange(b, device=logits.device), torch.arange(b, device=logits.device) * per_mention] = False
        logits = logits.masked_fill(same, float("-inf"))
    return logits


def in_batch_loss(mentions: torch.Tensor, entities: torch.Tensor, multiplier: float,
                  gold_qids: torch.Tensor | None = None, column_qids: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy on the gold columns, logits)."""
    b = mentions.shape[0]
    if entities.shape[0] % b:
        raise ValueError(f"{entities.shape[0]} entity columns for {b} mentions (expected a multiple)")
    logits = in_batch_logits(mentions, entities, multiplier, gold_qids, column_qids)
    target = gold_columns(b, entities.shape[0] // b - 1, logits.device)
    return F.cross_entropy(logits, target), logits
