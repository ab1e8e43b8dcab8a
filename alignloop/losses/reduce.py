"""Masked reductions: how per-token values become per-sequence or per-batch numbers.

Batches are padded, and completion-only methods score only response tokens, so every reduction
over tokens needs a mask. Two choices matter and live here:

- masked positions are *selected away* (`torch.where`), not multiplied by zero: padding may hold
  `-inf` or NaN log-probs, and `nan * 0` is NaN;
- an empty mask (a row with no scored token) averages to 0, not 0/0 = NaN, so one degenerate row
  cannot poison a whole batch.

`sums_over_examples` turns a loss written per example into the package's convention (sums over
the examples, see `alignloop/losses/__init__.py`), keeping the per-example form at hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

Metrics = dict[str, torch.Tensor]


def _check_mask(values: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.shape != values.shape:
        raise ValueError(
            f"mask must have the shape of values: values {tuple(values.shape)}, mask {tuple(mask.shape)}"
        )


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is true (bool or 0/1), over `dim` (all elements when None)."""
    _check_mask(values, mask)
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true, over `dim`; 0 (not NaN) where the mask is empty."""
    total = masked_sum(values, mask, dim)
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim)
    # clamp: an empty row has total 0, so 0 / 1 = 0 instead of 0 / 0 = NaN.
    return total / count.clamp(min=1).to(total.dtype)


def sums_over_examples(
    per_example: Callable[..., tuple[torch.Tensor, Metrics]],
) -> Callable[..., tuple[torch.Tensor, Metrics]]:
    """A loss written per example, returning (losses (B,), metrics (B,) each), as the package's
    `(loss_sum, metrics)`: () sums over the examples.

    The per-example function stays available as `.per_example` (same signature): for callers
    that weight examples (the reward ensemble's bootstrap) and for tests that check each example.
    The signature seen by `inspect` (hence by `variants.call_variant`) is the loss's own.
    """

    @functools.wraps(per_example)
    def loss(*args, **kwargs) -> tuple[torch.Tensor, Metrics]:
        losses, metrics = per_example(*args, **kwargs)
        return losses.sum(), {name: value.sum() for name, value in metrics.items()}

    loss.per_example = per_example  # type: ignore[attr-defined]
    return loss
