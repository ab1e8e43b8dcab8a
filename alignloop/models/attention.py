"""`attn_implementation: auto`: SDPA, except plain matmul attention where that is faster.

PyTorch's fused SDPA kernel for CPU (flash attention) has a large fixed cost in its backward
pass. Training batches of RLHF data are mostly short chat turns (< 200 tokens), and there two
batched matmuls and a softmax are faster. Measured on this project's 2-core AMX CPU, bf16
autocast, SmolLM2-135M with LoRA, a reward-model step of 16 rows of 117 tokens: 3.52 s with SDPA,
2.81 s with matmul attention (`benchmarks/attention_kernels.py` measures the crossover). For
long sequences the fused kernel wins, and it needs O(T) memory where matmul attention keeps a
T × T matrix per head for the backward pass, so `auto` uses matmul attention only for short
sequences, only on CPU and only when gradients are recorded (generation keeps SDPA). Where
"short" ends depends on the CPU and the dtype: it is measured once per machine
(`uses_matmul_attention`).

The implementation is registered with transformers under `AUTO_ATTENTION` and gets SDPA's
boolean masks (True = attend; None = plain causal). It also runs packed batches
(alignloop/models/padding_free.py): the real tokens of a batch in one row, a prompt shared by
several sequences once, the rows described by `PackedRows`. There each sequence is gathered
back for attention alone, so the cost stays that of the longest sequence, not of the whole row.
With `auto` the model's rotary embedding also follows CPU autocast's dtype
(`rotary_in_autocast_dtype`).
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from alignloop import hardware

AUTO_ATTENTION = "alignloop_auto"


def uses_matmul_attention(query: torch.Tensor, key: torch.Tensor) -> bool:
    """Matmul attention for training on a CPU up to this machine's crossover key length.

    The crossover is measured once per machine and training dtype (`hardware.matmul_attention_max_keys`):
    forward + backward at SmolLM2's attention shape, ~1,024 tokens a batch. On the 2-core AMX Xeon
    under bf16 autocast matmul attention won up to ~192 keys (21 vs 38 ms at 128 keys; 3-5x
    slower from 256); on the 2-core AVX2 EPYC in float32 only up to 64-128 (13-16 vs 17-23 ms at 64
    keys, a tie at 128, 38 vs 25 ms at 192), where the fused kernel's float32 path is fast.
    """
    if query.device.type != "cpu" or not torch.is_grad_enabled():
        return False
    return key.shape[-2] <= hardware.matmul_attention_max_keys(_training_dtype(query))


def _training_dtype(tensor: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return tensor.dtype if tensor.dtype in (torch.bfloat16, torch.float16) else torch.float32


def matmul_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, H, Tq, D)
    key: torch.Tensor,  # (B, Hkv, Tk, D)
    value: torch.Tensor,  # (B, Hkv, Tk, D)
    attention_mask: torch.Tensor | None,  # (B, 1, Tq, Tk) bool, True = attend; None = causal
    scaling: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v as (B, Tq, H, D), like transformers' kernels.

    - Under autocast the inputs are first cast to its dtype, once: rotary embeddings hand over
      float32 queries and keys, which each product would otherwise cast again.
    - With grouped-query attention, the G query heads that share a key head are stacked into
      one (G·Tq)-row matrix against it, instead of copying the keys and values G times (and
      summing their gradients back): a LoRA reward-model step of the built-in model (9 query
      heads on 3 key heads), 2.41 s -> 2.14 s on the 2-core CPU.
    - The mask is filled into the scores in place, on the product itself rather than on a view
      of it (autograd would copy the scores three more times per layer in the backward pass):
      a full reward-model step of the built-in model, 2.14 s -> 1.89 s.
    - The scale multiplies the queries, a D-wide tensor, rather than the Tk-wide scores; for
      D = 64 the scale is a power of two, so the result is the same to the bit.
    - The softmax runs in the scores' dtype. For bf16 the CPU kernel sums in float32 anyway, and
      the weights are rounded to bf16 for the product with V either way; what a float32 softmax
      adds is a float32 copy of the weights, cast forth and back in both passes: 9 % of the
      same step (2.55 s -> 2.31 s). Weights and gradients differ from the float32 softmax's by
      about one bf16 rounding (tests/models/test_attention.py).
    """
    query, key, value = (_in_autocast_dtype(t) for t in (query, key, value))
    batch, heads, queries, width = query.shape
    key_heads, keys = key.shape[1], key.shape[2]
    groups = heads // key_heads
    scale = scaling if scaling is not None else width**-0.5
    stacked = (query * scale).reshape(batch, key_heads, groups * queries, width)  # heads of a group share keys
    scores = torch.matmul(stacked, key.transpose(2, 3))  # (B, Hkv, G·Tq, Tk): row g·Tq + q
    if attention_mask is None and queries > 1 and getattr(module, "is_causal", True):
        # Causal with the queries aligned to the last keys (they are equal in training).
        attention_mask = torch.ones(queries, keys, dtype=torch.bool, device=query.device).tril(keys - queries)
    if attention_mask is not None:
        # The dtype's lowest value, not -inf: a row with nothing to attend to (a left-pad query)
        # becomes uniform instead of NaN; its output is never read. In place: neither the
        # product's nor the fill's backward needs the scores. On the product itself, not on a
        # view of it: autograd copies the whole scores three more times for an in-place view.
        per_group = attention_mask.repeat(*[1] * (attention_mask.dim() - 2), groups, 1)  # ([B, 1,] G·Tq, Tk)
        scores = scores.masked_fill_(~per_group, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value)  # (B, Hkv, G·Tq, D)
    return out.view(batch, heads, queries, width).transpose(1, 2).contiguous()


def _in_autocast_dtype(tensor: torch.Tensor) -> torch.Tensor:
    device = tensor.device.type
    if tensor.is_floating_point() and torch.is_autocast_enabled(device):
        return tensor.to(torch.get_autocast_dtype(device))
    return tensor


def attend(module, query, key, value, attention_mask, scaling, dropout, **kwargs) -> torch.Tensor:
    """(B, Tq, H, D) attention output by the faster kernel for this shape."""
    boolean_mask = attention_mask is None or attention_mask.dtype == torch.bool
    if boolean_mask and uses_matmul_attention(query, key):
        return matmul_attention(module, query, key, value, attention_mask, scaling, dropout)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)[0]


PACKED_ROWS = "alignloop_packed_rows"  # the keyword argument that hands PackedRows to the attention


@dataclass(frozen=True)
class PackedRows:
    """The rows of a packed batch (alignloop/models/padding_free.py), as attention needs them.

    The M real tokens of the batch sit left-aligned in an (R, T) grid, one row per sequence; the
    model computes N <= M of them (a prefix shared by several rows, once).
    """

    slots: torch.Tensor  # (M,) grid cell of each real token, row-major
    output_cells: torch.Tensor  # (N,) grid cell of each packed token
    mask: torch.Tensor  # (R, 1, T, T) bool: causal, within each row's real tokens
    source: torch.Tensor | None  # (M,) packed token that holds each real token; None: all packed

    @classmethod
    def of(cls, aligned: torch.Tensor, slots: torch.Tensor, home: torch.Tensor, source: torch.Tensor | None):
        """aligned (R, T) bool grid of the real tokens; home (N,) the real token of each packed one."""
        width = aligned.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=aligned.device).tril()
        return cls(slots, slots[home], (causal & aligned[:, None, :])[:, None], source)

    @property
    def shape(self) -> tuple[int, int]:
        """(R, T): rows and the longest row's length."""
        return self.mask.shape[0], self.mask.shape[-1]

    def per_token(self, packed: torch.Tensor) -> torch.Tensor:
        """(N, ...) values of the packed tokens -> (M, ...) values of every real token."""
        return packed if self.source is None else packed.index_select(0, self.source)


def packed_attention(module, query, key, value, rows: PackedRows, scaling, dropout) -> torch.Tensor:
    """Attention within each row of a packed batch.

    query (1, H, N, D), key / value (1, Hkv, N, D) of the packed tokens. Returns (1, N, H, D).
    Keys and values are gathered into their (R, ·, T, D) rows, a shared prefix into every row
    that has it; queries only where their token is packed (the other cells' outputs are not
    read). The rows go to the kernel as one padded batch and the outputs are gathered back.
    """

    def in_rows(per_token: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:  # (·, h, D) -> (R, h, T, D)
        return to_grid(per_token, cells, rows.shape).transpose(1, 2)

    queries = in_rows(query[0].transpose(0, 1), rows.output_cells)
    keys, values = (in_rows(rows.per_token(states[0].transpose(0, 1)), rows.slots) for states in (key, value))
    out = attend(module, queries, keys, values, rows.mask, scaling, dropout)  # (R, T, H, D)
    return out.flatten(0, 1).index_select(0, rows.output_cells)[None]


def grid_slots(real: torch.Tensor) -> torch.Tensor:
    """(S, T) bool -> (N,) flat indices of its True cells, row-major: where each token sits."""
    return real.flatten().nonzero().squeeze(1)


def to_grid(values: torch.Tensor, slots: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, ...) values -> (S, T, ...) with values[i] at flat cell slots[i], zeros elsewhere.

    index_copy rather than masked_scatter: its backward is a gather (index_select), where
    masked_scatter's (masked_select) runs single-threaded on CPU.
    """
    grid = values.new_zeros(math.prod(shape), *values.shape[1:]).index_copy(0, slots, values)
    return grid.view(*shape, *values.shape[1:])


def auto_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    rows = kwargs.pop(PACKED_ROWS, None)
    if rows is not None:
        return packed_attention(module, query, key, value, rows, scaling, dropout), None
    return attend(module, query, key, value, attention_mask, scaling, dropout, **kwargs), None


# Set while a packed forward runs: its rows go to the attention directly (PACKED_ROWS), so the
# (N, N) block mask transformers would build from the position ids is not needed.
PACKED_FORWARD: ContextVar[bool] = ContextVar("alignloop_packed_forward", default=False)


def auto_mask(*args, **kwargs) -> torch.Tensor | None:
    return None if PACKED_FORWARD.get() else sdpa_mask(*args, **kwargs)


AttentionInterface.register(AUTO_ATTENTION, auto_attention)
AttentionMaskInterface.register(AUTO_ATTENTION, auto_mask)


def rotary_in_autocast_dtype(model: torch.nn.Module) -> torch.nn.Module:
    """On the CPU under autocast, the model's rotary cos / sin come out in autocast's dtype.

    transformers makes them in the dtype of the hidden states, which is float32 under autocast;
    q · cos then promotes the bf16 projections of the queries and keys to float32, and every
    rotary product, its backward and the casts back to bf16 for attention run at twice the
    bytes. A model loaded in bf16 computes its rotary embedding in bf16 anyway. A LoRA
    reward-model step of the built-in model on the 2-core CPU: 2.28 s -> 2.13 s. Part of
    `attn_implementation: auto`; returns `model`.
    """
    for module in model.modules():
        if type(module).__name__.endswith("RotaryEmbedding"):
            module.register_forward_hook(_rotary_outputs_in_autocast_dtype)
    return model


def _rotary_outputs_in_autocast_dtype(module, args, outputs):
    return tuple(_in_autocast_dtype(t) for t in outputs) if outputs[0].device.type == "cpu" else None


def transformers_attention(name: str) -> str:
    """The `attn_implementation` to hand transformers for a config value (`auto` is ours)."""
    return AUTO_ATTENTION if name == "auto" else name
