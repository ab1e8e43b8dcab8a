"""Padding-free forward passes: a padded (B, T) batch runs as one row of its real tokens, and
rows that begin with the same prompt run that prompt once.

The linear layers, most of a transformer's work, then see only those tokens instead of B × T.

- **Padding.** Batches of chosen and rejected replies carry much padding
  (benchmarks/train_vs_trl.py: 16 rows of 52 to 117 tokens, 28 % of the batch).
- **Shared prefixes.** The chosen and rejected replies of a pair, or the K responses of a
  ranking, repeat the same prompt (and chat-template header) in every row: 28 % of the real
  tokens of the benchmark's pairs, 38 % of the multi-turn HH-RLHF harmless pairs'.
  Under causal attention a token's hidden state depends only on the tokens before it, so
  every row of a group has the same hidden states over the group's longest common prefix:
  they are computed once, from the group's first row, and read by all of them.

Attention still runs row by row (`packed_attention` in alignloop/models/attention.py): each
row's keys and values are gathered from the packed tokens, its shared prefix included, so its
cost is that of the longest row, not of the whole packed row. The hidden states come back in
the batch's padded layout, zeros at the padding, so the losses that read them do not change.
The result is the padded forward's in exact arithmetic (tests/models/test_padding_free.py);
gradients of a shared token sum over the rows that read it, as they would over the copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from alignloop.models.attention import AUTO_ATTENTION, PACKED_FORWARD, PACKED_ROWS, PackedRows, grid_slots, to_grid


@dataclass(frozen=True)
class PackedBatch:
    """Where the M real tokens of a (R, T) batch go in one (1, N) row, N <= M.

    Real tokens are numbered row by row, m = 0..M-1. A token is packed (it is its own "home")
    unless it lies in its group's shared prefix in a row other than the group's first.
    """

    real: torch.Tensor  # (R, T) bool: the real tokens of the batch
    home: torch.Tensor  # (N,) long: which real token m each packed position computes
    positions: torch.Tensor  # (M,) long: each real token's position in its row, from 0
    rows: PackedRows  # what the attention needs: the row of every token, packed or shared

    @classmethod
    def of(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_groups: torch.Tensor | None = None):
        """`prefix_groups` (R,): rows with the same value share their common prefix; None = no sharing."""
        real = attention_mask.bool()
        lengths = real.sum(-1)  # (R,)
        positions = positions_from_mask(real)[real]  # (M,)
        aligned = torch.arange(int(lengths.max()), device=real.device) < lengths[:, None]  # (R, T'), left-aligned
        aligned_slots = grid_slots(aligned)  # (M,)
        if prefix_groups is None:
            home, source = torch.arange(len(positions), device=real.device), None
        else:
            ids = to_grid(input_ids[real], aligned_slots, aligned.shape)  # (R, T'), 0 past each row's end
            home, source = computed_tokens(*shared_prefixes(ids, aligned, prefix_groups), lengths, positions)
        return cls(real, home, positions, PackedRows.of(aligned, aligned_slots, home, source))

    def model_inputs(self, input_ids: torch.Tensor) -> dict:
        """One (1, N) row of the packed tokens with their positions in their own rows."""
        return {"input_ids": input_ids[self.real][self.home][None], "position_ids": self.positions[self.home][None],
                PACKED_ROWS: self.rows}

    def repad(self, flat: torch.Tensor) -> torch.Tensor:
        """(1, N, ...) values of the packed tokens -> (R, T, ...), zeros at the padding."""
        per_token = self.rows.per_token(flat[0])  # (M, ...)
        return to_grid(per_token, grid_slots(self.real), self.real.shape)


def shared_prefixes(ids: torch.Tensor, real: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of its group (R,), length of the group's common prefix (R,)) for left-aligned ids.

    The common prefix of a group is the shortest of its rows' common prefixes with the group's
    first row (and no longer than any of its rows).
    """
    rows = torch.arange(len(groups), device=groups.device)
    _, group = torch.unique(groups, return_inverse=True)  # (R,) dense group ids
    first_of_group = torch.full((int(group.max()) + 1,), len(groups), device=groups.device)
    first_row = first_of_group.scatter_reduce(0, group, rows, "amin")[group]  # (R,)
    same = (ids == ids[first_row]) & real & real[first_row]  # (R, T')
    with_first = same.long().cumprod(-1).sum(-1)  # (R,) common prefix with the first row
    longest = torch.full_like(first_of_group, ids.shape[1])
    return first_row, longest.scatter_reduce(0, group, with_first, "amin")[group]


def computed_tokens(
    first_row: torch.Tensor, prefix: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(home (N,), source (M,)): the real tokens m that are computed, in order, and for every real
    token the packed index of the one that holds its hidden state.

    first_row, prefix (R,) as `shared_prefixes` gives them; lengths (R,) real tokens per row;
    positions (M,) of each real token in its row. A token inside its group's shared prefix, in a
    row other than the group's first, reads the first row's token at the same position.
    """
    tokens = torch.arange(len(positions), device=positions.device)
    row = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)  # (M,)
    is_home = (positions >= prefix[row]) | (first_row[row] == row)  # (M,)
    row_start = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))[:-1]  # (R,) m of each row's first token
    computed_by = torch.where(is_home, tokens, row_start[first_row[row]] + positions)  # (M,) a home token
    packed_index = is_home.long().cumsum(0) - 1  # (M,): where each home token sits among the N
    return tokens[is_home], packed_index[computed_by]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B, T) position ids counting real tokens from 0, whatever the padding side."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def supports_padding_free(model: torch.nn.Module) -> bool:
    """Only alignloop's attention is given the rows of a packed batch; a sliding window would need
    them too. `model.padding_free: false` (ModelConfig) turns it off."""
    inner = _unwrapped(model)
    config = inner.config
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    wanted = getattr(inner, "alignloop_padding_free", True)
    return wanted and config._attn_implementation == AUTO_ATTENTION and not sliding


def shares_prefixes(model: torch.nn.Module) -> bool:
    """Padding-free and not turned off by `model.share_prefixes: false` (ModelConfig)."""
    return supports_padding_free(model) and getattr(_unwrapped(model), "alignloop_share_prefixes", True)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP wraps the model in `.module`
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def last_hidden_states(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    prefix_groups: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """(B, T, H) hidden states after the final norm; with `layers`, (len(layers), B, T, H) those
    of the given layers instead (transformers' numbering: 0 is the token embeddings, i the output
    of block i, the last one after the final norm).

    A batch with padding, or with `prefix_groups` (B,) naming rows that share a prompt, runs
    packed when the model's attention supports it; rows are then independent sequences whose
    positions count their real tokens from 0 (what `positions_from_mask` gives the padded
    forward, for left and right padding alike).
    """
    share = prefix_groups is not None and len(prefix_groups.unique()) < len(prefix_groups) and shares_prefixes(model)
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    if not ((padded or share) and supports_padding_free(model)):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return _hidden(model, {k: v for k, v in inputs.items() if v is not None}, layers)
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    packed = PackedBatch.of(input_ids, mask, prefix_groups if share else None)
    token = PACKED_FORWARD.set(True)
    try:
        hidden = _hidden(model, packed.model_inputs(input_ids), layers)  # (1, N, H) or (len(layers), 1, N, H)
    finally:
        PACKED_FORWARD.reset(token)
    if layers is None:
        return packed.repad(hidden)
    return torch.stack([packed.repad(layer) for layer in hidden])


def _hidden(model: torch.nn.Module, inputs: dict, layers: Sequence[int] | None = None) -> torch.Tensor:
    """The last hidden states (or those of `layers`, stacked), without the LM head where that is
    allowed.

    A DDP-wrapped model must run its own forward, where DDP prepares the gradient sync; there
    logits_to_keep=1 projects one position. Otherwise the decoder body alone runs (LoRA layers are
    in it), which also saves the bf16 cast of the output layer's weight: about 6 % of a LoRA
    reward-model step of the built-in model on CPU.
    """
    if hasattr(model, "module"):
        states = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states
    elif layers is None:
        return _unwrapped(model).get_decoder()(**inputs, use_cache=False).last_hidden_state
    else:
        decoder = _unwrapped(model).get_decoder()
        with blocks_up_to(decoder, max(layers) + 1):
            states = decoder(**inputs, use_cache=False, output_hidden_states=True).hidden_states
    return states[-1] if layers is None else torch.stack([states[i] for i in layers])


@contextlib.contextmanager
def blocks_up_to(decoder: torch.nn.Module, count: int) -> Iterator[None]:
    """Inside the block the decoder runs its first `count` blocks only.

    Features read low in the network (`reward.feature_layers: [0, 8]`, the demo's) need nothing
    above them: the built-in model then runs 9 of its 30 blocks. The demo's reward model scores
    64 replies in 1.60 s instead of 4.57 s (float32 with AVX2 kernels on the 2-core AMD EPYC;
    1.64 s against 5.09 with its AVX-512 ones), with the same scores. Block i's output
    (hidden_states[i]) is the same either way; the last entry of hidden_states is the final norm
    of the last block run, so one block past the highest layer read is run.
    """
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList) or count >= len(blocks):
        yield
        return
    decoder.layers = blocks[:count]
    try:
        yield
    finally:
        decoder.layers = blocks

