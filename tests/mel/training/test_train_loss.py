"""The in-batch softmax: b × b(neg+1) logits, cross-entropy on the gold column."""

from __future__ import annotations

import math

import pytest
import torch

from mel.training.loss import gold_columns, in_batch_logits, in_batch_loss


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


# b = 2 mentions, neg = 1: columns [m1 positive, m1 negative, m2 positive, m2 negative].
MENTIONS = [unit(1.0, 0.2), unit(0.3, 1.0)]
ENTITIES = [unit(1.0, 0.0), unit(0.6, 0.8), unit(0.0, 1.0), unit(1.0, 1.0)]


def direct_loss(multiplier: float, excluded: set[tuple[int, int]] = frozenset()) -> float:
    """Cross-entropy written out by hand: -log(exp(s_gold) / sum_j exp(s_j)), averaged over rows."""
    total = 0.0
    for i, mention in enumerate(MENTIONS):
        scores = [multiplier * sum(a * b for a, b in zip(mention, entity)) for entity in ENTITIES]
        gold = scores[2 * i]
        denominator = sum(math.exp(s) for j, s in enumerate(scores) if (i, j) not in excluded)
        total += -(gold - math.log(denominator))
    return total / len(MENTIONS)


@pytest.mark.parametrize("multiplier", [1.0, 5.0, 50.0])
def test_loss_equals_a_direct_computation_on_a_2x4_example(multiplier):
    loss, logits = in_batch_loss(torch.tensor(MENTIONS), torch.tensor(ENTITIES), multiplier)
    assert logits.shape == (2, 4)
    assert gold_columns(2, 1).tolist() == [0, 2]
    assert logits[1, 3].item() == pytest.approx(multiplier * sum(a * b for a, b in zip(MENTIONS[1], ENTITIES[3])),
                                                rel=1e-5)
    assert loss.item() == pytest.approx(direct_loss(multiplier), rel=1e-5)


def test_a_column_holding_the_rows_own_entity_is_left_out():
    # Column 3 (mention 2's negative) is mention 1's gold entity, Q1, mined again.
    gold = torch.tensor([1, 2])
    columns = torch.tensor([1, 7, 2, 1])
    loss, logits = in_batch_loss(torch.tensor(MENTIONS), torch.tensor(ENTITIES), 50.0, gold, columns)
    assert logits[0, 3].item() == float("-inf")
    assert torch.isfinite(logits[1]).all()  # for mention 2, Q1 is a true negative
    assert loss.item() == pytest.approx(direct_loss(50.0, excluded={(0, 3)}), rel=1e-5)


def test_the_gold_column_itself_is_never_masked():
    gold = torch.tensor([5, 5])  # both mentions of the same entity
    columns = torch.tensor([5, 7, 5, 8])
    logits = in_batch_logits(torch.tensor(MENTIONS), torch.tensor(ENTITIES), 50.0, gold, columns)
    assert torch.isfinite(logits[0, 0]) and torch.isfinite(logits[1, 2])
    assert logits[0, 2].item() == float("-inf") and logits[1, 0].item() == float("-inf")


def test_gradient_pulls_the_mention_towards_its_entity():
    mentions = torch.tensor(MENTIONS, requires_grad=True)
    loss, _ = in_batch_loss(mentions, torch.tensor(ENTITIES), 50.0)
    loss.backward()
    step = -mentions.grad[0]
    assert torch.dot(step, torch.tensor(ENTITIES[0])) > torch.dot(step, torch.tensor(ENTITIES[1]))


def test_entities_must_come_in_groups_per_mention():
    with pytest.raises(ValueError, match="multiple"):
        in_batch_loss(torch.tensor(MENTIONS), torch.tensor(ENTITIES[:3]), 50.0)
