"""Models that really compute in float64, for tests that tell a reordering of float32 sums
(agreement to ~1e-15 in float64) from a real difference (no agreement in any precision)."""

from __future__ import annotations

import types

import torch


def in_float64(model: torch.nn.Module) -> torch.nn.Module:
    """`model` computed in float64 throughout; returns it.

    `model.double()` is not enough: transformers' Llama computes its RMSNorm and its rotary
    cos / sin in float32 whatever the model's dtype, so each norm would round the float64
    hidden states and their gradients to float32. The norms and rotary embeddings of this
    model instance compute in their input's dtype instead.
    """
    model.double()
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    rotaries = [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]
    assert norms and rotaries  # otherwise the model is not the one these replacements are for
    for norm in norms:
        norm.forward = types.MethodType(_rms_norm_in_input_dtype, norm)
    for rotary in rotaries:
        rotary.forward = types.MethodType(_rotary_in_input_dtype, rotary)
    return model


def _rms_norm_in_input_dtype(self, hidden: torch.Tensor) -> torch.Tensor:
    return self.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def _rotary_in_input_dtype(self, hidden: torch.Tensor, position_ids: torch.Tensor):
    angles = position_ids[..., None].to(hidden.dtype) * self.inv_freq.to(hidden.dtype)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling
