"""The contract between the generic loop and a training method (SFT, reward model, DPO, ...).

A method turns a micro-batch into a *sum* of per-item losses and says how many items (tokens
for SFT, pairs for DPO) the batch holds. The engine divides by the item count of the whole
optimizer step, across every micro-batch and every process. That makes the gradient of
`batch_size=8` identical to `batch_size=4, grad_accum=2` and to two processes of 4 — the
accumulation bug where every micro-batch is averaged on its own cannot happen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # () sum of per-item losses in this micro-batch
    metric_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # each () summed over items


class TrainingMethod(Protocol):
    def count_items(self, batch: dict[str, Any]) -> int:
        """How many items the loss of this micro-batch sums over."""

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        """Forward pass and loss of one micro-batch."""


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; training stopped before the weights were touched."""
