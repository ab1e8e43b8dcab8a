"""Padding-free forward passes give the padded forward's hidden states, scores and gradients."""

from __future__ import annotations

import pytest
import torch

from alignloop.models import load_model_and_tokenizer
from alignloop.models.padding_free import Unpadded, last_hidden_states, supports_padding_free
from alignloop.models.reward_model import positions_from_mask


def batch(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lengths, width = [7, 3, 5], 7
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, slice(width - length, None) if left else slice(None, length)] = 1
    return torch.randint(3, 100, (len(lengths), width)) * mask, mask


def test_unpadded_layout_by_hand():
    _, mask = batch(left=True)
    unpadded = Unpadded.of(mask)
    assert unpadded.cu_seq_lens.tolist() == [0, 7, 10, 15] and unpadded.max_length == 7
    inputs = unpadded.model_inputs(torch.arange(21).view(3, 7))
    assert inputs["input_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 16, 17, 18, 19, 20]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 3, 4]]
    back = unpadded.repad(torch.arange(1, 16, dtype=torch.float)[None, :, None])  # (1, N, 1)
    assert back[1, :, 0].tolist() == [0, 0, 0, 0, 8, 9, 10]


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("grad", [False, True])  # matmul attention / SDPA inside the sequences
def test_padding_free_matches_the_padded_forward(tiny_model_dir, left, grad):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    assert supports_padding_free(model)
    ids, mask = batch(left)
    real = mask.bool()
    results = []
    # Padding-free, then the padded forward with transformers' matmul attention as the reference
    # (SDPA's fused kernel differs from any matmul attention by ~7e-5 in these gradients).
    for attention in ("alignloop_auto", "eager"):
        model.config._attn_implementation = attention
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            hidden = last_hidden_states(model, ids, mask, positions_from_mask(mask))
        assert (hidden[~real] == 0).all() or attention == "eager"
        if grad:
            hidden[real].square().sum().backward()
        results.append((hidden[real].detach(), [p.grad.clone() for p in model.parameters()] if grad else []))
    (ours, our_grads), (theirs, their_grads) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for mine, reference in zip(our_grads, their_grads):  # summed in another order: compare norms
        assert (mine - reference).norm() <= 2e-6 * reference.norm()


def test_other_attention_kernels_keep_the_padded_forward(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), attn_implementation="sdpa")
    assert not supports_padding_free(model)  # sdpa would attend across the packed sequences' block mask only
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), padding_free=False)
    assert not supports_padding_free(model)
