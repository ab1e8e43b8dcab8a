"""Batches of preference data: one padded tensor holds every response of the batch."""

from __future__ import annotations

import pytest
import torch

from alignloop.data import (
    EncodedBinary,
    EncodedExample,
    EncodedPair,
    EncodedRanking,
    EncodedRating,
    PreferencePair,
    PreferenceRecords,
    collate_binary,
    collate_pairs,
    collate_rankings,
    collate_ratings,
    encode_preference_records,
)

PAD = 2


def example(*ids: int, prompt: int = 1) -> EncodedExample:
    return EncodedExample(input_ids=list(ids), labels=[-100] * prompt + list(ids[prompt:]))


def test_collate_pairs_chosen_rows_then_rejected_rows_sharing_the_prompt(smol_tokenizer):
    records = PreferenceRecords(pairs=[
        PreferencePair(prompt="Name a colour.", chosen="Blue.", rejected="I will not.", margin=1.5),
        PreferencePair(prompt="Hi", chosen="Hello! How are you today?", rejected="Go away."),
    ])
    encoded, _ = encode_preference_records(smol_tokenizer, records, max_length=512)
    batch = collate_pairs(encoded.pairs, pad_token_id=smol_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 4
    for i, pair in enumerate(encoded.pairs):
        prompt_length = pair.chosen.labels.count(-100)
        assert prompt_length == pair.rejected.labels.count(-100) > 0
        assert torch.equal(batch["input_ids"][i, :prompt_length], batch["input_ids"][2 + i, :prompt_length])
        for row, side in ((i, pair.chosen), (2 + i, pair.rejected)):
            length = len(side)
            assert batch["input_ids"][row, :length].tolist() == side.input_ids
            assert batch["labels"][row, :length].tolist() == side.labels
            assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (batch["input_ids"].shape[1] - length)
            assert (batch["input_ids"][row, length:] == smol_tokenizer.pad_token_id).all()
            assert (batch["labels"][row, length:] == -100).all()
    assert batch["margin"].tolist() == [1.5, 0.0] and batch["margin"].dtype == torch.float32
    assert batch["has_margin"].tolist() == [True, False]
    assert batch["prefix_groups"].tolist() == [0, 1, 0, 1]  # pair b: rows b and B + b


def test_collate_rankings_slot_index_maps_back_to_each_response():
    rankings = [
        EncodedRanking(responses=[example(5, 6), example(5, 7, 7), example(5, 8)], ranks=[1, 1, 3]),
        EncodedRanking(responses=[example(9, 10, 11, 12), example(9, 13)], ranks=[1, 2]),
    ]
    batch = collate_rankings(rankings, PAD)
    assert batch["input_ids"].tolist() == [
        [5, 6, PAD, PAD], [5, 7, 7, PAD], [5, 8, PAD, PAD], [9, 10, 11, 12], [9, 13, PAD, PAD],
    ]
    assert batch["labels"][4].tolist() == [-100, 13, -100, -100]
    assert batch["slot_index"].tolist() == [[0, 1, 2], [3, 4, 0]]
    assert batch["prefix_groups"].tolist() == [0, 0, 0, 1, 1]
    assert batch["ranking_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["ranks"].tolist() == [[1, 1, 3], [1, 2, 0]]
    for b, ranking in enumerate(rankings):
        for k, response in enumerate(ranking.responses):
            row = batch["input_ids"][batch["slot_index"][b, k]]
            assert row[: len(response)].tolist() == response.input_ids
    # Per-row scores gather into (B, Kmax) as plackett_luce wants them.
    row_scores = batch["input_ids"][:, 1].float()  # (N,)
    assert row_scores[batch["slot_index"]].masked_fill(~batch["ranking_mask"], 0).tolist() == [[6, 7, 8], [10, 13, 0]]


def test_collate_ratings_and_binary():
    ratings = [
        EncodedRating(example(1, 2, 3), 4.0, 1.0, 5.0, "helpful"),
        EncodedRating(example(4, 5), 0.5, 0.0, 1.0, None),
    ]
    batch = collate_ratings(ratings, PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (batch["score"].tolist(), batch["scale_min"].tolist(), batch["scale_max"].tolist()) == (
        [4.0, 0.5], [1.0, 0.0], [5.0, 1.0]
    )
    binary = collate_binary([EncodedBinary(example(1, 2), True), EncodedBinary(example(3, 4, 5), False)], PAD)
    assert binary["label"].tolist() == [True, False] and binary["label"].dtype == torch.bool
    assert binary["labels"].tolist() == [[-100, 2, -100], [-100, 4, 5]]


@pytest.mark.parametrize("collate", [collate_pairs, collate_rankings, collate_ratings, collate_binary])
def test_empty_batches_are_refused(collate):
    with pytest.raises(ValueError, match="empty batch"):
        collate([], PAD)


def test_pairs_and_margin_dtype_on_hand_made_examples():
    pairs = [EncodedPair(example(3, 4), example(3, 5, 6), None), EncodedPair(example(7, 8, 9), example(7, 1), 0.0)]
    batch = collate_pairs(pairs, PAD)
    assert batch["input_ids"].tolist() == [[3, 4, PAD], [7, 8, 9], [3, 5, 6], [7, 1, PAD]]
    assert batch["has_margin"].tolist() == [False, True] and batch["margin"].tolist() == [0.0, 0.0]
