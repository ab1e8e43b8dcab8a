"""The per-example values of a loss written per example (`losses.reduce.sums_over_examples`),
for tests that check each example by hand, after checking that the loss returns their sums."""

from __future__ import annotations

import torch


def per_example(loss, *args, **kwargs):
    """`loss.per_example(...)`: losses (B,) and metrics (B,), once `loss(...)` is seen to return
    exactly their () sums, metric by metric."""
    losses, metrics = loss.per_example(*args, **kwargs)
    loss_sum, metric_sums = loss(*args, **kwargs)
    assert loss_sum.shape == () and torch.equal(loss_sum, losses.sum())
    assert metric_sums.keys() == metrics.keys()
    for name, value in metrics.items():
        assert metric_sums[name].shape == () and torch.equal(metric_sums[name], value.sum()), name
    return losses, metrics
