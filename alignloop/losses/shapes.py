"""Shape checks for the token-level losses (`policy`) and advantage estimators (`advantages`).

A loss fed tensors of the wrong shape usually still runs, broadcasting (B,) against (B, T)
into a (B, B, T) tensor or averaging a (B, T) tensor as if it were (B,), and trains on
nonsense. These checks fail first, with the function's name and every tensor's shape.
"""

from __future__ import annotations

import torch

_SHAPE_NAMES = {1: "(B,)", 2: "(B, T)"}


def require_shapes(fn_name: str, dims: int, **tensors: torch.Tensor) -> None:
    """Every tensor has `dims` dimensions and they all have one shape; ValueError otherwise."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != dims or any(shape != first for shape in shapes.values()):
        expected = _SHAPE_NAMES.get(dims, f"{dims}-d")
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{fn_name}: expected {expected} tensors of one shape, got {listed}")
