"""Tensor operations shared by the methods: label shifting, log-probs of chosen tokens, grids.

A causal LM predicts token t from positions < t, so the label of position t+1 is scored by the
logits at position t (`shifted_targets`). This module is the bottom floor: it imports torch
only. What runs a model (`response_logits`, `response_logps`, ...) is `alignloop.models.forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# Per-token reductions over the vocabulary (log-softmax, entropy) take the (N, V) logits a slab
# of rows at a time. Each reduction is several passes over its input; a (768, 49k) float32
# matrix is 150 MB, which every pass streams from memory, while a 2 MB slab stays in the CPU
# cache for all of them. Log-probs (forward + backward) and the entropy of a GRPO update's 768
# response tokens on the built-in model: 0.5-0.85 s whole, 0.14-0.19 s in slabs (2-core CPU).
LOGIT_SLAB_ELEMENTS = 1 << 19

def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B, T-1) targets aligned with the logits of positions 0..T-2."""
    return labels[:, 1:]


def logit_slabs(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, V) logits cut into slabs of rows of about LOGIT_SLAB_ELEMENTS each. `split`, not
    slicing: the backward of a slice builds a zero gradient of the full size for every slab."""
    return logits.split(max(1, LOGIT_SLAB_ELEMENTS // max(1, logits.shape[-1])))


def selective_log_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row: logits (N, V), targets (N,) -> (N,).

    Cross-entropy is this quantity negated, in one fused kernel forward and backward. Computed
    slab by slab (see LOGIT_SLAB_ELEMENTS), half precision upcast to float32: bf16 has too few
    mantissa bits for a normalisation over tens of thousands of classes.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    slabs = logit_slabs(logits)  # an empty (0, V) matrix is one empty slab
    slab_targets = targets.split([len(slab) for slab in slabs])
    return torch.cat([-F.cross_entropy(x.to(dtype), t, reduction="none") for x, t in zip(slabs, slab_targets)])


def token_logp_grid(
    logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scored-position logits (N, V) -> (logps grid (R, T-1), mask (R, T-1), tempered logits (N, V))."""
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    mask = shifted_targets(labels) != IGNORE_INDEX  # (R, T-1)
    return on_grid(selective_log_softmax(logits, targets), mask), mask, logits


def on_grid(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) values of the masked positions (row-major) -> (R, T-1) float32 grid, 0 elsewhere."""
    grid = torch.zeros(mask.shape, dtype=torch.float32, device=values.device)
    return grid.masked_scatter(mask, values.float())
