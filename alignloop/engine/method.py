"""The contract between the generic loop and a training method (SFT, reward model, DPO, ...).

A method turns a micro-batch into a *sum* of per-item losses and says how many items (tokens
for SFT, pairs for DPO) the batch holds. The engine divides by the item count of the whole
optimizer step, across every micro-batch and every process. That makes the gradient of
`batch_size=8` identical to `batch_size=4, grad_accum=2` and to two processes of 4 — the
accumulation bug where every micro-batch is averaged on its own cannot happen.

On-policy methods (PPO) first *collect* experience with the current weights — sample, score,
compute old log-probs, values and advantages, all without gradients — and then run several
optimizer updates on it. For them one engine step is one rollout plus its updates: the step
is what checkpoints, resumes and metrics count, so an interrupted run restarts at a rollout
boundary and never between the updates of one batch of experience.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from alignloop.errors import UserError


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # () sum of per-item losses in this micro-batch
    metric_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # each () summed over items


class TrainingMethod(Protocol):
    def count_items(self, batch: dict[str, Any]) -> int:
        """How many items the loss of this micro-batch sums over."""

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        """Forward pass and loss of one micro-batch."""


@dataclass
class Experience:
    """What an on-policy method collected in one step, on this process."""

    updates: list[list[dict[str, Any]]]  # optimizer updates in order, each a list of micro-batches
    metric_sums: dict[str, float]  # rollout metrics, each summed over this process's sequences
    num_sequences: int
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few (prompt, response, reward, ...) rows


@runtime_checkable
class OnPolicyMethod(Protocol):
    """A method that samples before it learns (see the module docstring)."""

    def updates_per_step(self) -> int:
        """Optimizer updates run on the experience of one step (epochs x minibatches)."""

    def collect(self, model: torch.nn.Module, micro_batches: list[dict[str, Any]]) -> Experience:
        """Sample and score with the current weights; no gradients."""

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Adapt method state (a KL coefficient) to the step's global metrics; return extra metrics."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that a resumed run must restore."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteLossError(RuntimeError, UserError):
    """The loss or gradient became NaN/inf; training stopped before the weights were touched."""
