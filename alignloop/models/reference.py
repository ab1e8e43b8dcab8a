"""The frozen reference policy of DPO, KTO, PPO and GRPO, and the policy evaluation.

With LoRA the reference is the same network with its adapters switched off: no second model in
memory. With full fine-tuning it is a frozen copy of the model as loaded, before the first
update. The pass that computes reference log-probs of a whole dataset once, before training,
is `alignloop.engine.precompute`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

from alignloop.models.lora import adapters_disabled, is_lora_model


def frozen_copy_unless_lora(model: torch.nn.Module, needed: bool = True) -> torch.nn.Module | None:
    """A frozen copy of the starting model to serve as the reference during training, or None
    when none is needed (LoRA: the reference is the same network with its adapters off)."""
    if not needed or is_lora_model(model):
        return None
    return copy.deepcopy(model).eval().requires_grad_(False)


@contextlib.contextmanager
def reference_network(model: torch.nn.Module, frozen_copy: torch.nn.Module | None) -> Iterator[torch.nn.Module]:
    """The network that computes reference log-probs now: the frozen copy if there is one,
    otherwise `model` itself with its LoRA adapters switched off for the duration."""
    if frozen_copy is not None:
        yield frozen_copy
        return
    with adapters_disabled(model):
        yield model
