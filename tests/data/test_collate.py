"""Padding, packing, and proof that packed examples do not attend to each other."""

from __future__ import annotations

import pytest
import torch

from alignloop.data import (
    DataError,
    EncodedExample,
    SFTExample,
    collate_packed,
    count_loss_tokens,
    encode_sft_dataset,
    pack_examples,
    pad_batch,
)

A = EncodedExample(input_ids=[5, 6, 7], labels=[-100, 6, 7])
B = EncodedExample(input_ids=[8, 9], labels=[-100, 9])


def example_of_length(length: int, first_id: int = 10) -> EncodedExample:
    ids = list(range(first_id, first_id + length))
    return EncodedExample(input_ids=ids, labels=list(ids))


# --- padding --------------------------------------------------------------------------------


def test_pad_right():
    batch = pad_batch([A, B], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert batch["input_ids"].dtype == torch.long


def test_pad_left():
    batch = pad_batch([A, B], pad_token_id=0, padding_side="left")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 9]]


def test_pad_rejects_nonsense():
    with pytest.raises(ValueError):
        pad_batch([], pad_token_id=0)
    with pytest.raises(ValueError, match="padding_side"):
        pad_batch([A], pad_token_id=0, padding_side="middle")


def test_count_loss_tokens_counts_targets_after_the_shift():
    # Row A: targets 6, 7; row B: target 9 (its padding is not a target).
    assert count_loss_tokens(pad_batch([A, B], pad_token_id=0)) == 3
    # A label at position 0 is never a target: nothing predicts it.
    assert count_loss_tokens(pad_batch([example_of_length(4)], pad_token_id=0)) == 3


# --- packing --------------------------------------------------------------------------------


def test_packing_is_greedy_in_order_and_never_splits_an_example():
    packed = pack_examples([example_of_length(n) for n in (3, 2, 4, 1, 3, 3)], max_length=5)
    assert [row.example_lengths for row in packed] == [(3, 2), (4, 1), (3,), (3,)]
    with pytest.raises(DataError, match="example 1: 6 tokens do not fit a packed row of max_length=5"):
        pack_examples([example_of_length(2), example_of_length(6)], max_length=5)


def test_packed_row_restarts_positions_and_masks_each_first_label():
    (row,) = pack_examples([A, B], max_length=8)
    assert row.input_ids == [5, 6, 7, 8, 9]
    assert row.position_ids == [0, 1, 2, 0, 1]
    # B's first label (-100 already) and A's first label stay unpredicted; 6, 7, 9 are targets.
    assert row.labels == [-100, 6, 7, -100, 9]
    (row,) = pack_examples([example_of_length(2, 10), example_of_length(2, 20)], max_length=8)
    assert row.labels == [-100, 11, -100, 21]


def test_collate_packed_pads_with_a_block_of_its_own():
    packed = pack_examples([A, B, example_of_length(4)], max_length=5)
    batch = collate_packed(packed, pad_token_id=0, pad_to=6)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100], [-100, 11, 12, 13, -100, -100]]
    assert count_loss_tokens(batch) == 6
    assert collate_packed(packed, pad_token_id=0)["input_ids"].shape == (2, 5)
    with pytest.raises(ValueError, match="pad_to=4 is shorter"):
        collate_packed(packed, pad_token_id=0, pad_to=4)


# --- packed == unpacked, with a real (tiny, random) model ------------------------------------

DEMONSTRATIONS = [
    SFTExample(prompt="What is 2+2?", response="4."),
    SFTExample(prompt="Name a colour.", response="Blue, like the sky on a clear day."),
    SFTExample(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Need help?"}]),
    SFTExample(prompt="Say yes.", response="Yes."),
]


@pytest.fixture(scope="module")
def tiny_llama(smol_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == "sdpa"
    return model


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T - 1) cross-entropy of logits[t] against labels[t + 1], 0 where the label is -100."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=-100, reduction="none"
    )


def alone(model, example: EncodedExample) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_batch([example], pad_token_id=2)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], use_cache=False).logits
    return logits[0], per_token_loss(logits, batch["labels"])[0]


def test_packed_examples_score_exactly_as_they_do_alone(smol_tokenizer, tiny_llama):
    encoded, _ = encode_sft_dataset(smol_tokenizer, DEMONSTRATIONS, max_length=64)
    packed = pack_examples(encoded, max_length=96)
    assert len(packed) >= 2 and any(len(row.example_lengths) >= 2 for row in packed)  # real packing
    batch = collate_packed(packed, pad_token_id=2, pad_to=96)  # (B, 96), padding included
    with torch.no_grad():
        output = tiny_llama(**batch, use_cache=False)
    packed_losses = per_token_loss(output.logits, batch["labels"])

    total_loss, total_tokens, compared = 0.0, 0, 0
    example_index = 0
    for row, sequence in enumerate(packed):
        offset = 0
        for length in sequence.example_lengths:
            logits, losses = alone(tiny_llama, encoded[example_index])
            torch.testing.assert_close(output.logits[row, offset : offset + length], logits, atol=1e-5, rtol=0)
            # The packed losses inside the example (positions offset .. offset+length-2) are
            # the example's own; the one at its last token would predict the NEXT example's
            # first token, and must be masked.
            torch.testing.assert_close(packed_losses[row, offset : offset + length - 1], losses, atol=1e-5, rtol=0)
            if offset + length < batch["labels"].shape[1]:
                assert packed_losses[row, offset + length - 1] == 0
            total_loss += float(losses.sum())
            total_tokens += count_loss_tokens(pad_batch([encoded[example_index]], pad_token_id=2))
            compared += 1
            offset += length
            example_index += 1
    assert compared == len(encoded) == 4
    assert count_loss_tokens(batch) == total_tokens
    # The model's own (shifted, mean-reduced) loss over the packed batch is the token-weighted
    # mean of the examples' losses alone.
    assert float(output.loss) == pytest.approx(total_loss / total_tokens, abs=1e-5)


def test_packed_rows_need_use_cache_false(smol_tokenizer, tiny_llama):
    # With a cache, transformers skips packed-sequence detection and attends across examples:
    # the reason collate_packed's docstring insists on use_cache=False.
    encoded, _ = encode_sft_dataset(smol_tokenizer, DEMONSTRATIONS[:2], max_length=64)
    batch = collate_packed(pack_examples(encoded, max_length=128), pad_token_id=2)
    second = slice(len(encoded[0]), len(encoded[0]) + len(encoded[1]))
    with torch.no_grad():
        isolated = tiny_llama(**batch, use_cache=False).logits[0, second]
        leaky = tiny_llama(**batch, use_cache=True).logits[0, second]
    torch.testing.assert_close(isolated, alone(tiny_llama, encoded[1])[0], atol=1e-5, rtol=0)
    assert not torch.allclose(leaky, isolated, atol=1e-3)
