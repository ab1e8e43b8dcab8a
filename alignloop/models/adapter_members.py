"""Ensemble members as LoRA adapters on one shared frozen base: K members cost K adapters
(4.9 M parameters each for the built-in model at r = 16, 3.6 % of its weights), not K models.

peft holds several named adapters on one model and computes with the active one. Member 0 is
the adapter the loader made ("default", so that a one-member folder and the rest of alignloop
read it as any LoRA model); members 1..K-1 are "member_1" ... "member_{K-1}", added with the same
LoRA settings. Each starts with B = 0 (the base model's function) and its own random A, and
trains on its own bootstrap of the judgements (reward_ensemble.py), so the members drift apart
where the judgements leave room.

A member is scored by making its adapter the active one (`active_member`). peft's
`set_adapter` also makes the active adapter trainable and freezes the others; here every
adapter trains in the same step (one backward through all K forwards), so the context manager
puts every parameter's `requires_grad` back as it was. peft's mixed-adapter batches
(`adapter_names=`) would score all members in one call, but they need the batch dimension,
which alignloop's padding-free forward folds into one packed row, and peft refuses them while
training; so members run one after the other: K forward passes of the backbone.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

from alignloop.models.lora import is_lora_model, without_redundant_input_casts

__all__ = ["FIRST_MEMBER", "active_member", "add_member_adapters", "member_adapter_names"]

FIRST_MEMBER = "default"  # the adapter peft's loaders create


def member_adapter_names(count: int) -> tuple[str, ...]:
    """The adapters of a `count`-member ensemble, member 0 first."""
    return (FIRST_MEMBER, *(f"member_{k}" for k in range(1, count)))


def _peft(backbone: torch.nn.Module):
    inner = getattr(backbone, "module", backbone)  # DDP wraps the model in `.module`
    if not is_lora_model(inner):
        raise TypeError("members as adapters need a LoRA backbone (model.lora)")
    return inner


def add_member_adapters(backbone: torch.nn.Module, count: int) -> tuple[str, ...]:
    """Give a LoRA backbone with one adapter ("default") `count` - 1 more with the same settings,
    all trainable as the first is; returns the members' adapter names."""
    peft_model = _peft(backbone)
    names = member_adapter_names(count)
    trainable = _trains(peft_model, FIRST_MEMBER)
    for name in names[1:]:
        peft_model.add_adapter(name, copy.deepcopy(peft_model.peft_config[FIRST_MEMBER]))
        _start_as_first_member(peft_model, name)
    peft_model.set_adapter(FIRST_MEMBER)
    for parameter_name, parameter in peft_model.named_parameters():
        if any(f".{name}." in parameter_name for name in names):
            parameter.requires_grad_(trainable)
    without_redundant_input_casts(peft_model)
    return names


def _start_as_first_member(peft_model, name: str) -> None:
    """Make adapter `name` compute what member 0 computes. A fresh member 0 (B = 0) computes the
    base model whatever its A, so the new member keeps its own random A (members that start
    apart end further apart); an adapter loaded to continue training (`model.adapter`, e.g. the
    SFT model's) is copied whole, so that every member starts from it."""
    state = {n: p for n, p in peft_model.named_parameters() if ".lora_" in n}
    first = {n: p for n, p in state.items() if f".{FIRST_MEMBER}." in n}
    fresh = all(not bool(p.any()) for n, p in first.items() if ".lora_B." in n)
    with torch.no_grad():
        for parameter_name, parameter in first.items():
            if fresh and ".lora_A." in parameter_name:
                continue
            state[parameter_name.replace(f".{FIRST_MEMBER}.", f".{name}.")].copy_(parameter)


@contextlib.contextmanager
def active_member(backbone: torch.nn.Module, name: str) -> Iterator[None]:
    """Inside the block the backbone computes with adapter `name`; afterwards the previously
    active adapter is back, and every parameter's `requires_grad` is as it was before."""
    peft_model = _peft(backbone)
    previous = peft_model.active_adapter
    flags = [(parameter, parameter.requires_grad) for parameter in peft_model.parameters()]
    frozen = not _trains(peft_model, name)  # a frozen member stays frozen while it computes
    peft_model.set_adapter(name, inference_mode=frozen)
    try:
        yield
    finally:
        peft_model.set_adapter(previous, inference_mode=frozen)
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _trains(peft_model, name: str) -> bool:
    """Whether adapter `name`'s parameters require gradients."""
    return any(parameter.requires_grad for parameter_name, parameter in peft_model.named_parameters()
               if f".{name}." in parameter_name)
