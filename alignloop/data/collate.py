"""Batches of encoded examples: padding, and packing several examples into one row.

Padding wastes compute on pad tokens when lengths vary; packing concatenates whole examples
(greedily, in order, never splitting one) into rows of up to `max_length` tokens instead.

A packed row carries NO attention mask but `position_ids` that restart at 0 for each example.
transformers (5.x, `masking_utils.find_packed_sequence_indices`) reads a restart of the
positions as the start of a new sequence and builds a block-diagonal causal mask for sdpa and
eager attention (flash-attention uses the same positions for its variable-length kernel), so
no token attends across an example boundary. The detection only runs when the model gets no
attention mask AND no cache: call the model with `use_cache=False` on packed batches, or a
cache object is created and the examples silently attend to each other.

Labels stay unshifted (the model shifts them: the logits at t are scored against the label at
t + 1). At the first token of every packed example that target would be predicted from the
previous example's last token, so that label is set to -100; on its own an example's first
label is never a target either, which keeps packed and unpacked losses identical.

Preference batches put every response of the batch into ONE padded tensor, so a policy,
reference or reward model runs one forward pass per batch instead of one per response slot:
a pair batch is the B chosen rows followed by the B rejected rows (row i and row B + i answer
the same prompt, so `logps[:B]` and `logps[B:]` line up); a ranking batch stacks the responses
of all rankings, and `slot_index` (B, Kmax) says which row holds each ranking's k-th response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from alignloop.data.encode import IGNORE_INDEX, EncodedExample
from alignloop.data.errors import DataError

if TYPE_CHECKING:
    from alignloop.data.preference import EncodedBinary, EncodedPair, EncodedRanking, EncodedRating

__all__ = [
    "PackedSequence", "pad_batch", "pack_examples", "collate_packed", "count_loss_tokens",
    "collate_pairs", "collate_rankings", "collate_ratings", "collate_binary",
]


def pad_batch(
    examples: Sequence[EncodedExample],
    pad_token_id: int,
    padding_side: Literal["right", "left"] = "right",
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels of shape (B, longest); labels are -100 on padding."""
    if not examples:
        raise ValueError("cannot pad an empty batch")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    longest = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)  # (B, T)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        span = slice(0, length) if padding_side == "right" else slice(longest - length, longest)
        input_ids[row, span] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, span] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass(frozen=True)
class PackedSequence:
    """Several whole examples end to end; `position_ids` restart at 0 at each example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    example_lengths: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def _pack(group: Sequence[EncodedExample]) -> PackedSequence:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for example in group:
        input_ids.extend(example.input_ids)
        # See the module docstring: the first label of an example must never be a target.
        labels.extend([IGNORE_INDEX] + list(example.labels[1:]))
        position_ids.extend(range(len(example.input_ids)))
    return PackedSequence(input_ids, labels, position_ids, tuple(len(example) for example in group))


def pack_examples(encoded: Sequence[EncodedExample], max_length: int) -> list[PackedSequence]:
    """Greedy, order-preserving packing: start a new row when the next example would not fit."""
    groups: list[list[EncodedExample]] = []
    current_length = 0
    for index, example in enumerate(encoded):
        if len(example) > max_length:
            raise DataError(
                f"example {index}: {len(example)} tokens do not fit a packed row of max_length={max_length}; "
                "truncate or drop overlong examples when encoding"
            )
        if not groups or current_length + len(example) > max_length:
            groups.append([])
            current_length = 0
        groups[-1].append(example)
        current_length += len(example)
    return [_pack(group) for group in groups]


def collate_packed(
    packed: Sequence[PackedSequence], pad_token_id: int, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """input_ids, labels and position_ids of shape (B, L), with no attention mask.

    L is the longest row, or `pad_to` (e.g. the packing max_length, for fixed shapes). Padding
    gets labels -100 and positions counting from 0 again, so it forms a block of its own that no
    real token attends to. Call the model with `use_cache=False` (see the module docstring).
    """
    if not packed:
        raise ValueError("cannot collate an empty batch")
    width = max(len(row) for row in packed)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest packed row ({width})")
        width = pad_to
    input_ids = torch.full((len(packed), width), pad_token_id, dtype=torch.long)  # (B, L)
    labels = torch.full((len(packed), width), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    position_ids = torch.zeros((len(packed), width), dtype=torch.long)  # (B, L)
    for row, sequence in enumerate(packed):
        length = len(sequence)
        input_ids[row, :length] = torch.tensor(sequence.input_ids, dtype=torch.long)
        labels[row, :length] = torch.tensor(sequence.labels, dtype=torch.long)
        position_ids[row, :length] = torch.tensor(sequence.position_ids, dtype=torch.long)
        position_ids[row, length:] = torch.arange(width - length)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def count_loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    """How many tokens the loss is taken over: labels other than -100 after the model's shift."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def collate_pairs(pairs: Sequence[EncodedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels (2B, T): chosen rows 0..B-1, then rejected rows B..2B-1;
    margin (B,) float (0 where a pair has none), has_margin (B,) bool, weight (B,) float (the
    judgement's share in reward-model training), and prefix_groups (2B,) long: pair b's rows
    both get b (they share a prompt; alignloop/models/padding_free.py)."""
    if not pairs:
        raise ValueError("cannot collate an empty batch")
    batch = pad_batch([pair.chosen for pair in pairs] + [pair.rejected for pair in pairs], pad_token_id)
    # A missing margin is 0, not NaN: NaN times a zero weight is still NaN in a loss.
    batch["margin"] = torch.tensor([pair.margin or 0.0 for pair in pairs], dtype=torch.float32)  # (B,)
    batch["has_margin"] = torch.tensor([pair.margin is not None for pair in pairs], dtype=torch.bool)  # (B,)
    batch["weight"] = torch.tensor([pair.weight for pair in pairs], dtype=torch.float32)  # (B,)
    batch["prefix_groups"] = torch.arange(len(pairs)).repeat(2)  # (2B,)
    return batch


def collate_rankings(rankings: Sequence[EncodedRanking], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels (N, T): every response of every ranking, ranking by ranking;
    ranks (B, Kmax) long (0 on padding), ranking_mask (B, Kmax) bool, slot_index (B, Kmax) long;
    weight (B,) float; prefix_groups (N,) long: the ranking of each row (its responses share a prompt).

    `slot_index[b, k]` is the row of ranking b's k-th response, so `row_scores[slot_index]` gives
    (B, Kmax) scores for `plackett_luce(scores, ranks, ranking_mask)`. Padding slots point at row
    0, a valid row, so the gather needs no clamping; the mask keeps them out of the loss.
    """
    if not rankings:
        raise ValueError("cannot collate an empty batch")
    batch = pad_batch([response for ranking in rankings for response in ranking.responses], pad_token_id)
    slots = max(len(ranking.responses) for ranking in rankings)
    ranks = torch.zeros((len(rankings), slots), dtype=torch.long)  # (B, Kmax)
    ranking_mask = torch.zeros((len(rankings), slots), dtype=torch.bool)  # (B, Kmax)
    slot_index = torch.zeros((len(rankings), slots), dtype=torch.long)  # (B, Kmax)
    first_row = 0
    for row, ranking in enumerate(rankings):
        count = len(ranking.responses)
        ranks[row, :count] = torch.tensor(ranking.ranks, dtype=torch.long)
        ranking_mask[row, :count] = True
        slot_index[row, :count] = torch.arange(first_row, first_row + count)
        first_row += count
    prefix_groups = torch.repeat_interleave(torch.tensor([len(ranking.responses) for ranking in rankings]))  # (N,)
    weight = torch.tensor([ranking.weight for ranking in rankings], dtype=torch.float32)  # (B,)
    batch.update(ranks=ranks, ranking_mask=ranking_mask, slot_index=slot_index, prefix_groups=prefix_groups,
                 weight=weight)
    return batch


def collate_ratings(ratings: Sequence[EncodedRating], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels (B, T); score, scale_min, scale_max (B,) float."""
    if not ratings:
        raise ValueError("cannot collate an empty batch")
    batch = pad_batch([rating.example for rating in ratings], pad_token_id)
    for name in ("score", "scale_min", "scale_max"):
        batch[name] = torch.tensor([getattr(rating, name) for rating in ratings], dtype=torch.float32)  # (B,)
    return batch


def collate_binary(feedback: Sequence[EncodedBinary], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, labels (B, T); label (B,) bool (True = thumbs up)."""
    if not feedback:
        raise ValueError("cannot collate an empty batch")
    batch = pad_batch([item.example for item in feedback], pad_token_id)
    batch["label"] = torch.tensor([item.label for item in feedback], dtype=torch.bool)  # (B,)
    return batch
