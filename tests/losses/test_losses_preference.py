"""DPO family, SimPO and KTO against values computed by hand.

The inputs are chosen so that beta * h lands on 1, 0 and -1, where -log sigma(x) is
log(1 + e^-x): the expected numbers are then short expressions on literals.
"""

from __future__ import annotations

import math

import pytest
import torch
from losses_per_example import per_example
from torch.testing import assert_close

from alignloop.losses import (
    DPO_LOSSES,
    dpo_hinge,
    dpo_ipo,
    dpo_robust,
    dpo_sigmoid,
    kto,
    kto_reference_point,
    simpo,
)


def tensor(*values):
    return torch.tensor(values, dtype=torch.float64)


BETA = 0.5
# Log-ratio differences h = (pc - rc) - (pr - rr): (1 - (-1)) = 2, 0, (-1 - 1) = -2, so beta*h = 1, 0, -1.
PAIRS = dict(
    policy_chosen_logps=tensor(-10.0, -5.0, -8.0),
    policy_rejected_logps=tensor(-12.0, -5.0, -6.0),
    reference_chosen_logps=tensor(-11.0, -5.0, -7.0),
    reference_rejected_logps=tensor(-11.0, -5.0, -7.0),
)


def pairs_requiring_grad():
    return {name: value.clone().requires_grad_() for name, value in PAIRS.items()}


def test_dpo_sigmoid_by_hand():
    losses, _ = per_example(dpo_sigmoid, **PAIRS, beta=BETA)
    assert_close(losses, tensor(math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(1))))


def test_paired_metrics_by_hand():
    _, metrics = per_example(dpo_sigmoid, **PAIRS, beta=BETA)
    assert_close(metrics["rewards/chosen"], tensor(0.5 * 1, 0.0, 0.5 * -1))
    assert_close(metrics["rewards/rejected"], tensor(0.5 * -1, 0.0, 0.5 * 1))
    assert_close(metrics["rewards/margins"], tensor(1.0, 0.0, -1.0))
    assert_close(metrics["rewards/accuracies"], tensor(1.0, 0.0, 0.0))
    assert_close(metrics["logps/chosen"], tensor(-10.0, -5.0, -8.0))
    assert_close(metrics["logps/rejected"], tensor(-12.0, -5.0, -6.0))


def test_conservative_dpo_by_hand_and_zero_smoothing_is_plain_dpo():
    losses, _ = per_example(dpo_sigmoid, **PAIRS, beta=BETA, label_smoothing=0.25)
    expected = 0.75 * math.log(1 + math.exp(-1)) + 0.25 * math.log(1 + math.exp(1))
    assert_close(losses[0], torch.tensor(expected, dtype=torch.float64))
    assert_close(losses[1], torch.tensor(math.log(2), dtype=torch.float64))  # both labels cost log 2 at h = 0
    plain, _ = dpo_sigmoid(**PAIRS, beta=BETA)
    assert torch.equal(dpo_sigmoid(**PAIRS, beta=BETA, label_smoothing=0.0)[0], plain)


def test_robust_dpo_by_hand_and_zero_noise_is_dpo():
    losses, _ = per_example(dpo_robust, **PAIRS, beta=BETA, label_smoothing=0.25)
    assert_close(
        losses,
        tensor(
            (0.75 * math.log(1 + math.exp(-1)) - 0.25 * math.log(1 + math.exp(1))) / 0.5,
            (0.75 * math.log(2) - 0.25 * math.log(2)) / 0.5,
            (0.75 * math.log(1 + math.exp(1)) - 0.25 * math.log(1 + math.exp(-1))) / 0.5,
        ),
    )
    assert_close(dpo_robust(**PAIRS, beta=BETA)[0], dpo_sigmoid(**PAIRS, beta=BETA)[0], rtol=0, atol=0)


def test_ipo_by_hand_uses_summed_log_ratios():
    losses, _ = per_example(dpo_ipo, **PAIRS, beta=BETA)
    # 1 / (2 beta) = 1: (2 - 1)^2, (0 - 1)^2, (-2 - 1)^2
    assert_close(losses, tensor(1.0, 1.0, 9.0))


def test_hinge_by_hand():
    losses, _ = per_example(dpo_hinge, **PAIRS, beta=BETA)
    assert_close(losses, tensor(0.0, 1.0, 2.0))  # max(0, 1 - beta h) for beta h = 1, 0, -1


def test_simpo_by_hand():
    losses, metrics = per_example(simpo, tensor(-1.0, -0.5), tensor(-1.5, -2.0), beta=2.0, gamma=1.0)
    # 2(-1) - 2(-1.5) - 1 = 0 and 2(-0.5) - 2(-2) - 1 = 2
    assert_close(losses, tensor(math.log(2), math.log(1 + math.exp(-2))))
    assert_close(metrics["rewards/chosen"], tensor(-2.0, -1.0))
    assert_close(metrics["rewards/margins"], tensor(1.0, 3.0))
    assert_close(metrics["logps/chosen"], tensor(-1.0, -0.5))


def test_kto_by_hand():
    policy, reference = tensor(-2.0, -2.0, -4.0, -6.0), tensor(-5.0, -5.0, -5.0, -5.0)  # r = 3, 3, 1, -1
    desirable = torch.tensor([True, False, False, True])
    z0 = torch.tensor(1.0)
    losses, metrics = per_example(kto, policy, reference, desirable, z0, beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    # desirable: 1 - sigma(0.5 (r - 1)); undesirable: 2 (1 - sigma(0.5 (1 - r)))
    sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert_close(losses, tensor(1 - sigma(1), 2 * (1 - sigma(-1)), 2 * (1 - sigma(0)), 1 - sigma(-1)))
    assert_close(metrics["rewards/margins"], tensor(1.0, -1.0, 0.0, -1.0))
    assert_close(metrics["rewards/accuracies"], tensor(1.0, 0.0, 0.0, 0.0))
    assert_close(metrics["rewards/implicit"], tensor(1.5, 1.5, 0.5, -0.5))
    assert_close(metrics["kl/reference_point"], tensor(1.0, 1.0, 1.0, 1.0))


def test_kto_reference_point_is_a_detached_nonnegative_mean():
    policy = tensor(-3.0, -3.0).requires_grad_()
    z0 = kto_reference_point(policy, tensor(-4.0, -5.0))
    assert z0.shape == () and z0.item() == 1.5 and not z0.requires_grad
    assert kto_reference_point(tensor(-5.0, -5.0), tensor(-4.0, -3.0)).item() == 0.0  # mean -1.5 clamps to 0


def test_kto_clamps_and_detaches_the_reference_point_it_is_given():
    policy, reference, desirable = tensor(-2.0, -4.0), tensor(-3.0, -3.0), torch.tensor([True, False])
    negative = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    losses, _ = kto(policy, reference, desirable, negative, beta=0.5)
    assert_close(losses, kto(policy, reference, desirable, 0.0, beta=0.5)[0])
    assert not losses.requires_grad  # nothing reaches the reference point


def test_all_losses_have_finite_gradients():
    for name, loss in DPO_LOSSES.items():
        if loss is simpo:  # no reference, average log-probs: below
            continue
        inputs = pairs_requiring_grad()
        loss(**inputs, beta=BETA)[0].backward()
        for value in inputs.values():
            assert torch.isfinite(value.grad).all(), name
    chosen, rejected = tensor(-1.0, -0.5).requires_grad_(), tensor(-1.5, -2.0).requires_grad_()
    simpo(chosen, rejected, beta=2.0, gamma=1.0)[0].backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    policy = tensor(-2.0, -4.0).requires_grad_()
    kto(policy, tensor(-3.0, -3.0), torch.tensor([True, False]), 0.5, beta=0.5)[0].backward()
    assert torch.isfinite(policy.grad).all() and (policy.grad != 0).all()


def test_metrics_are_detached():
    _, metrics = dpo_sigmoid(**pairs_requiring_grad(), beta=BETA)
    assert not any(value.requires_grad for value in metrics.values())


def test_the_table_names_the_paired_variants():
    assert DPO_LOSSES == {"sigmoid": dpo_sigmoid, "robust": dpo_robust, "ipo": dpo_ipo, "hinge": dpo_hinge,
                          "simpo": simpo}


def test_bad_inputs_raise_clear_errors():
    column = {**PAIRS, "reference_chosen_logps": PAIRS["reference_chosen_logps"][:, None]}
    with pytest.raises(ValueError, match=r"dpo_sigmoid: expected \(B,\) tensors of one shape.*chosen_logps \(3, 1\)"):
        dpo_sigmoid(**column, beta=BETA)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_hinge(**PAIRS, beta=0.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        dpo_robust(**PAIRS, beta=BETA, label_smoothing=0.5)
    with pytest.raises(ValueError, match="dpo_ipo takes no label smoothing"):
        dpo_ipo(**PAIRS, beta=BETA, label_smoothing=0.1)
    with pytest.raises(ValueError, match="kl_estimate must be a scalar"):
        kto(tensor(-1.0), tensor(-1.0), torch.tensor([True]), tensor(0.1, 0.2), beta=0.1)
    with pytest.raises(ValueError, match="simpo: expected"):
        simpo(tensor(-1.0, -2.0), tensor(-1.0), beta=2.0, gamma=0.5)
