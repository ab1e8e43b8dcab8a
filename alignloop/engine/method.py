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

This module is the whole contract: the trainer calls nothing on a method that is not declared
below, and every hook a method may leave out has its default here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from alignloop.errors import UserError


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # () sum of per-item losses in this micro-batch
    metric_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # each () summed over items


class TrainingMethod(ABC):
    """Everything the trainer may call on a method. Subclasses write `count_items` and `loss`;
    every other hook has its default here, which a method overrides only to do something else."""

    #: Held-out examples per evaluation batch; None: train.batch_size.
    eval_batch_size: int | None = None

    @abstractmethod
    def count_items(self, batch: dict[str, Any]) -> int:
        """How many items the loss of this micro-batch sums over: the one statement of what an
        item is for this method (tokens for SFT, pairs for DPO; see alignloop/losses/__init__.py)."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
        """Forward pass and loss of one micro-batch: sums over its `count_items` items."""

    def parts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The pieces of a training micro-batch that run forward and backward one after the
        other; their loss sums add up to the micro-batch's. Default: the micro-batch whole.
        An ensemble whose members are adapters trains one member per part, so that only one
        member's activations are held at a time (alignloop/algorithms/reward.py). Under DDP the
        trainer runs the micro-batch whole."""
        return [batch]

    def evaluate_batch(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[LossOutput, int]:
        """Loss sums and item count of one held-out batch. Default: the training loss."""
        return self.loss(model, batch), self.count_items(batch)

    def stop_reason(self, metrics: dict[str, float]) -> str | None:
        """Why the run should end after a step with these metrics, or None (default: never)."""
        return None

    def may_stop(self) -> bool:
        """Whether `stop_reason` can ever answer (a KL budget or an alarm is set): an on-policy
        run then keeps the last weights its replies measured within bounds, to end on them."""
        return False

    def backtrack(self, metrics: dict[str, float]) -> float | None:
        """Instead of ending at a step `stop_reason` answers for: the factor the learning rate is
        scaled by when the run goes back to its last weights within bounds and carries on, or
        None to end (default: always end)."""
        return None


@dataclass
class Experience:
    """What an on-policy method collected in one step, on this process."""

    updates: list[list[dict[str, Any]]]  # optimizer updates in order, each a list of micro-batches
    metric_sums: dict[str, float]  # rollout metrics, each summed over this process's sequences
    num_sequences: int
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few (prompt, response, reward, ...) rows
    # 1-D tensors of this process's rollout (scores, values, ...) behind statistics that do not add
    # up across processes (a standard deviation): the engine gathers them from every process
    # and hands them to `OnPolicyMethod.rollout_statistics` once per step.
    rollout: dict[str, torch.Tensor] = field(default_factory=dict)


class OnPolicyMethod(TrainingMethod):
    """A method that samples before it learns (see the module docstring)."""

    @abstractmethod
    def updates_per_step(self) -> int:
        """Optimizer updates run on the experience of one step (epochs x minibatches)."""

    @abstractmethod
    def collect(self, model: torch.nn.Module, micro_batches: list[dict[str, Any]]) -> Experience:
        """Sample and score with the current weights; no gradients."""

    def rollout_statistics(self, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of the whole step's rollout, from `Experience.rollout` gathered from every
        process (concatenated in rank order). Default: none."""
        return {}

    def end_step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Adapt method state (a KL coefficient) to the step's global metrics; return extra
        metrics. Default: no state, no extra metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that a resumed run must restore. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned. Default: nothing to restore."""


class NonFiniteLossError(RuntimeError, UserError):
    """The loss or gradient became NaN/inf; training stopped before the weights were touched."""
