"""Masked reductions: values computed by hand, empty masks give 0, padding never leaks."""

from __future__ import annotations


import pytest
import torch
from torch.testing import assert_close

from alignloop.losses import masked_mean, masked_sum

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[True, True, False], [False, False, False]])


def test_masked_sum_and_mean_per_row():
    assert_close(masked_sum(VALUES, MASK, dim=-1), torch.tensor([1.0 + 2.0, 0.0]))
    assert_close(masked_mean(VALUES, MASK, dim=-1), torch.tensor([(1.0 + 2.0) / 2, 0.0]))


def test_masked_sum_and_mean_over_everything():
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]])  # 0/1 masks work as well as bool ones
    assert_close(masked_sum(VALUES, mask), torch.tensor(1.0 + 3.0 + 5.0))
    assert_close(masked_mean(VALUES, mask), torch.tensor((1.0 + 3.0 + 5.0) / 3))


def test_masked_mean_of_an_empty_mask_is_zero_not_nan():
    empty = torch.zeros_like(MASK)
    assert masked_mean(VALUES, empty).item() == 0.0
    assert masked_mean(VALUES, empty, dim=-1).tolist() == [0.0, 0.0]


def test_nan_and_inf_in_masked_slots_do_not_leak_into_value_or_gradient():
    values = torch.tensor([[0.5, float("nan")], [float("-inf"), 2.0]], requires_grad=True)
    mask = torch.tensor([[True, False], [False, True]])
    total = masked_sum(values, mask)
    total.backward()
    assert total.item() == 2.5
    assert values.grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"shape of values: values \(2, 3\), mask \(2, 2\)"):
        masked_mean(VALUES, MASK[:, :2])
