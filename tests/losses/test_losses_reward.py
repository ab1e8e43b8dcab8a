"""Reward-model losses against values computed by hand.

Plackett-Luce examples use scores log 3, log 2, log 1, so that exp(score) = 3, 2, 1 and every
choice probability is a small fraction.
"""

from __future__ import annotations

import math

import pytest
import torch
from losses_per_example import per_example
from torch.testing import assert_close

from alignloop.losses import (
    REWARD_LOSSES,
    bradley_terry,
    ordinal_log_probs,
    plackett_luce,
    rating_ordinal,
    rating_regression,
)


def tensor(*values):
    return torch.tensor(values, dtype=torch.float64)


LOG_321 = [math.log(3), math.log(2), math.log(1)]


def pl_loss(scores, ranks, mask=None):
    scores = torch.tensor([scores], dtype=torch.float64)
    mask = None if mask is None else torch.tensor([mask])
    return plackett_luce(scores, torch.tensor([ranks]), mask)[0].item()  # one ranking: the sum is its loss


def test_bradley_terry_by_hand():
    losses, metrics = per_example(bradley_terry, tensor(2.0, 0.0), tensor(1.0, 0.0))
    assert_close(losses, tensor(math.log(1 + math.exp(-1)), math.log(2)))
    assert_close(metrics["rewards/margins"], tensor(1.0, 0.0))
    assert_close(metrics["rewards/accuracies"], tensor(1.0, 0.0))
    assert_close(metrics["rewards/chosen"], tensor(2.0, 0.0))
    assert_close(metrics["rewards/rejected"], tensor(1.0, 0.0))


def test_bradley_terry_with_llama2_margin_by_hand():
    losses, metrics = per_example(bradley_terry, tensor(2.0, 0.0), tensor(1.0, 0.0), margin=tensor(1.0, -1.0))
    # -log sigma(1 - 1), -log sigma(0 + 1)
    assert_close(losses, tensor(math.log(2), math.log(1 + math.exp(-1))))
    assert_close(metrics["rewards/margins"], tensor(1.0, 0.0))  # the raw margin, before m
    assert_close(per_example(bradley_terry, tensor(2.0), tensor(1.0), margin=1.0)[0], tensor(math.log(2)))


def test_plackett_luce_three_items_by_hand():
    assert pl_loss(LOG_321, [1, 2, 3]) == pytest.approx(-math.log(3 / 6) - math.log(2 / 3))
    # item 2 first (2 of 6), then item 3 (1 of 1 + 3), then item 1 alone
    assert pl_loss(LOG_321, [3, 1, 2]) == pytest.approx(-math.log(2 / 6) - math.log(1 / 4))


def test_plackett_luce_ties_use_breslow_risk_sets_by_hand():
    # tied first: both chosen from all three; the last alone
    assert pl_loss(LOG_321, [1, 1, 2]) == pytest.approx(-math.log(3 / 6) - math.log(2 / 6))
    # tied last: both chosen from the two of them
    assert pl_loss(LOG_321, [1, 2, 2]) == pytest.approx(-math.log(3 / 6) - math.log(2 / 3) - math.log(1 / 3))
    assert pl_loss(LOG_321, [1, 1, 1]) == pytest.approx(-math.log(3 / 6) - math.log(2 / 6) - math.log(1 / 6))
    assert pl_loss([0.0, 0.0, 0.0], [1, 1, 1]) == pytest.approx(3 * math.log(3))  # the m log m floor


def test_plackett_luce_with_two_items_is_bradley_terry():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 2, generator=generator, dtype=torch.float64) * 3
    ranks = torch.tensor([[1, 2], [2, 1]] * 3)
    chosen = torch.where(ranks[:, 0] == 1, scores[:, 0], scores[:, 1])
    rejected = torch.where(ranks[:, 0] == 1, scores[:, 1], scores[:, 0])
    pl_losses, pl_metrics = per_example(plackett_luce, scores, ranks)
    bt_losses, bt_metrics = per_example(bradley_terry, chosen, rejected)
    assert_close(pl_losses, bt_losses, rtol=0, atol=1e-12)
    assert_close(pl_metrics["ranking/top1_accuracy"], bt_metrics["rewards/accuracies"])
    assert_close(pl_metrics["ranking/pairwise_accuracy"], bt_metrics["rewards/accuracies"])


def test_plackett_luce_ignores_padded_slots():
    nan = float("nan")
    scores = torch.tensor([[math.log(3), math.log(2), nan], LOG_321], dtype=torch.float64, requires_grad=True)
    ranks = torch.tensor([[1, 2, 0], [1, 2, 3]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    losses, _ = per_example(plackett_luce, scores, ranks, mask)
    assert losses[0].item() == pytest.approx(-math.log(3 / 5))
    assert losses[0].item() == pytest.approx(pl_loss(LOG_321[:2], [1, 2]))
    assert losses[1].item() == pytest.approx(pl_loss(LOG_321, [1, 2, 3]))
    losses.sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 2].item() == 0.0


def test_plackett_luce_metrics_by_hand():
    scores = torch.tensor([LOG_321, LOG_321], dtype=torch.float64)
    _, metrics = per_example(plackett_luce, scores, torch.tensor([[3, 1, 2], [1, 3, 2]]))
    assert_close(metrics["ranking/top1_accuracy"], tensor(0.0, 1.0))
    # row 0: of the pairs (2 over 3), (2 over 1), (3 over 1) only the first is scored in order;
    # row 1: (1 over 3) and (1 over 2) are, (3 over 2) is not.
    assert_close(metrics["ranking/pairwise_accuracy"], tensor(1 / 3, 2 / 3))


def test_rating_regression_by_hand():
    scale_min, scale_max = tensor(1.0, 0.0), tensor(5.0, 10.0)  # 1-5 stars, 0-10
    losses, metrics = per_example(rating_regression, tensor(0.5, 0.0), torch.tensor([4, 7]), scale_min, scale_max)
    assert_close(metrics["rating/target"], tensor(3 / 4, 7 / 10))
    assert_close(losses, tensor((0.5 - 0.75) ** 2, (0.0 - 0.7) ** 2))
    assert_close(per_example(rating_regression, tensor(1.0), tensor(3.0), 1.0, 5.0)[0], tensor((1.0 - 0.5) ** 2))


THRESHOLDS = tensor(-1.0, 1.0)  # three classes


def test_rating_ordinal_by_hand():
    losses, metrics = per_example(rating_ordinal, tensor(0.0, 0.0, 0.0), torch.tensor([0, 1, 2]), THRESHOLDS)
    # P(0) = sigma(-1) = 1 / (1 + e); P(1) = sigma(1) - sigma(-1) = (e - 1) / (e + 1); P(2) = sigma(-1)
    e = math.e
    assert_close(losses, tensor(math.log(1 + e), -math.log((e - 1) / (e + 1)), math.log(1 + e)))
    assert_close(metrics["rating/accuracy"], tensor(0.0, 1.0, 0.0))
    assert_close(metrics["rating/expected_class"], tensor(1.0, 1.0, 1.0))  # symmetric around class 1


def test_ordinal_probabilities_sum_to_one_and_match_the_naive_difference():
    scores = tensor(-3.0, -0.5, 0.0, 2.0, 7.0)
    thresholds = tensor(-2.0, 0.0, 0.5, 3.0)
    probs = ordinal_log_probs(scores, thresholds).exp()  # (B, 5)
    assert_close(probs.sum(-1), torch.ones(5, dtype=torch.float64))
    sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    cuts = [-math.inf, -2.0, 0.0, 0.5, 3.0, math.inf]
    naive = [[sigma(cuts[c + 1] - s) - sigma(cuts[c] - s) for c in range(5)] for s in scores.tolist()]
    assert_close(probs, torch.tensor(naive, dtype=torch.float64))


def test_ordinal_is_finite_for_extreme_scores_in_float32():
    scores = torch.tensor([-1e4, -50.0, 50.0, 1e4, 1e4, -1e4], requires_grad=True)
    thresholds = torch.tensor([-1.0, 1.0, 1.0001], requires_grad=True)
    index = torch.tensor([3, 0, 2, 0, 3, 1])
    losses, _ = per_example(rating_ordinal, scores, index, thresholds)
    losses.sum().backward()
    assert torch.isfinite(losses).all()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(thresholds.grad).all()
    assert losses[3].item() == pytest.approx(1e4 + 1, rel=1e-6)  # -log sigma(-1 - 1e4) ~ 1e4 + 1
    assert losses[4].item() == pytest.approx(0.0, abs=1e-6)
    assert_close(ordinal_log_probs(scores.detach(), thresholds.detach()).exp().sum(-1), torch.ones(6))


def test_reward_losses_have_finite_gradients():
    chosen, rejected = tensor(0.3, -2.0).requires_grad_(), tensor(1.0, 5.0).requires_grad_()
    bradley_terry(chosen, rejected, margin=0.5)[0].backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    scores = torch.tensor([LOG_321], dtype=torch.float64, requires_grad=True)
    plackett_luce(scores, torch.tensor([[2, 1, 2]]))[0].backward()
    assert torch.isfinite(scores.grad).all()
    predicted = tensor(0.2, 0.9).requires_grad_()
    rating_regression(predicted, tensor(2.0, 3.0), 1.0, 5.0)[0].backward()
    assert torch.isfinite(predicted.grad).all()


def test_the_table_names_the_losses():
    assert REWARD_LOSSES == {
        "bradley_terry": bradley_terry,
        "plackett_luce": plackett_luce,
        "rating_regression": rating_regression,
        "rating_ordinal": rating_ordinal,
    }


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"bradley_terry: expected \(B,\) tensors of one shape"):
        bradley_terry(tensor(1.0, 2.0), tensor(1.0))
    with pytest.raises(ValueError, match="margin must be a number or a"):
        bradley_terry(tensor(1.0, 2.0), tensor(1.0, 0.0), margin=tensor(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"plackett_luce: expected \(B, K\) tensors of one shape"):
        plackett_luce(tensor(1.0, 2.0), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"mask \(1, 2\)"):
        plackett_luce(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="scale_max must be greater"):
        rating_regression(tensor(0.5), tensor(3.0), 5.0, 5.0)
    with pytest.raises(ValueError, match=r"score_index must lie in \[0, 2\]"):
        rating_ordinal(tensor(0.0), torch.tensor([3]), THRESHOLDS)
    with pytest.raises(ValueError, match="strictly increasing"):
        rating_ordinal(tensor(0.0), torch.tensor([1]), tensor(1.0, 1.0))
    with pytest.raises(ValueError, match="C >= 2"):
        ordinal_log_probs(tensor(0.0), torch.zeros(0, dtype=torch.float64))
