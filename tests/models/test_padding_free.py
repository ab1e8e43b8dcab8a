"""Packed forward passes (padding-free, shared prefixes once) give the padded forward's hidden
states, scores and gradients."""

from __future__ import annotations

import pytest
import torch
from float64_models import in_float64

from alignloop import hardware
from alignloop.models import load_model_and_tokenizer
from alignloop.models.padding_free import (
    PackedBatch,
    last_hidden_states,
    shared_prefixes,
    shares_prefixes,
    supports_padding_free,
)
from alignloop.models.reward_model import positions_from_mask


def batch(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lengths, width = [7, 3, 5], 7
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, slice(width - length, None) if left else slice(None, length)] = 1
    return torch.randint(3, 100, (len(lengths), width)) * mask, mask


def test_packed_layout_by_hand():
    _, mask = batch(left=True)
    packed = PackedBatch.of(torch.arange(21).view(3, 7), mask)
    assert packed.rows.source is None and packed.rows.shape == (3, 7)
    inputs = packed.model_inputs(torch.arange(21).view(3, 7))
    assert inputs["input_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 16, 17, 18, 19, 20]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 3, 4]]
    back = packed.repad(torch.arange(1, 16, dtype=torch.float)[None, :, None])  # (1, N, 1)
    assert back[1, :, 0].tolist() == [0, 0, 0, 0, 8, 9, 10]


def shared_batch(left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Five rows in three groups: two replies to one prompt, two rows sharing 3 tokens, one alone."""
    rows = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 12], [5, 6, 7, 40, 41], [5, 6, 7, 8, 9, 13], [20, 21]]
    width = max(map(len, rows))
    ids, mask = torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width, dtype=torch.long)
    for row, tokens in enumerate(rows):
        cells = slice(width - len(tokens), None) if left else slice(None, len(tokens))
        ids[row, cells], mask[row, cells] = torch.tensor(tokens), 1
    return ids, mask, torch.tensor([7, 7, 3, 3, 0])  # any values name the groups


def test_shared_prefix_layout_by_hand():
    ids, mask, groups = shared_batch(left=False)
    packed = PackedBatch.of(ids, mask, groups)
    inputs = packed.model_inputs(ids)
    # Row 1 reuses row 0's first 4 tokens, row 3 reuses row 2's first 3: 25 real tokens, 18 computed.
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 5, 6, 7, 40, 41, 8, 9, 13, 20, 21]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 4, 0, 1, 2, 3, 4, 3, 4, 5, 0, 1]]
    # Each real token, row by row, reads this packed token:
    assert packed.rows.source.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 7, 8, 9, 10, 11, 12,
                                           8, 9, 10, 13, 14, 15, 16, 17]
    back = packed.repad(torch.arange(18, dtype=torch.float)[None, :, None])[..., 0]  # (R, T)
    assert back[1].tolist() == [0, 1, 2, 3, 7, 0, 0] and back[3].tolist() == [8, 9, 10, 13, 14, 15, 0]


def test_shared_prefixes_by_hand():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 3, 4], [1, 2, 0, 0], [1, 2, 3, 0], [9, 9, 9, 9]])
    real = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    # Group 4 = rows 0, 1, 2: row 1 extends row 0, row 2 is shorter than both; rows 3 and 4 alone.
    first, prefix = shared_prefixes(ids, real, torch.tensor([4, 4, 4, 1, 2]))
    assert first.tolist() == [0, 0, 0, 3, 4] and prefix.tolist() == [2, 2, 2, 3, 4]
    first, prefix = shared_prefixes(ids, real, torch.tensor([0, 0, 1, 1, 1]))  # an identical pair: all of it
    assert prefix.tolist() == [3, 3, 0, 0, 0]


# float32: every value is a chain of roundings and of reductions of at most 128 terms (the
# MLP's width; 64 for the hidden size, <= 25 tokens in a weight's gradient, <= 7 keys). A sum
# of n terms rounds to about sqrt(n)·eps of its magnitude (n·eps at worst); a few dozen such
# steps, forward and backward, add up like a random walk to well under 128·eps = 1.5e-5, the
# worst case of a single one. Packed and padded each land ~5e-7 from the float64 result.
FLOAT32_TOLERANCE = 128 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("grad", [False, True])  # matmul attention / SDPA inside the sequences
@pytest.mark.parametrize("shared", [False, True])
def test_packed_forward_matches_the_padded_forward(tiny_model_dir, monkeypatch, dtype, left, grad, shared):
    # The kernel by the test, not by this machine's measured crossover: matmul attention
    # whenever gradients are recorded (7 keys here), SDPA without them, on every machine.
    monkeypatch.setattr(hardware, "matmul_attention_max_keys", lambda dtype: 1 << 20)
    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    assert supports_padding_free(model) and shares_prefixes(model)
    if dtype == torch.float64:  # the same arithmetic, reordered: agrees to ~1e-15
        in_float64(model)
    ids, mask, groups = shared_batch(left) if shared else (*batch(left), None)
    real = mask.bool()
    # The gradients of a fixed random linear function of the hidden states. Not their squares'
    # sum: after the final RMSNorm (unit weight, hidden states of rms ~0.03) that is
    # H·ms/(ms + eps) per token, 1598.3 of 1600 here; its gradients are what is left of a
    # ~1000-fold cancellation and carry float32's rounding 1000-fold (7e-5 of their norm
    # between any two attention kernels, padded or packed).
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(int(real.sum()), model.config.hidden_size, generator=generator, dtype=torch.float64)
    probe = probe.to(dtype)
    results = []
    # Padding-free, then the padded forward with SDPA as the reference. Not eager attention: its
    # softmax runs in float32 whatever the dtype, and in float64 the dtype's lowest value, -inf
    # in float32, makes a left-pad query's weights NaN, which 0 · NaN carries to the real tokens.
    for attention in ("alignloop_auto", "sdpa"):
        model.config._attn_implementation = attention
        model.zero_grad()
        with torch.set_grad_enabled(grad):
            hidden = last_hidden_states(model, ids, mask, positions_from_mask(mask), prefix_groups=groups)
        assert hidden.dtype == dtype
        assert (hidden[~real] == 0).all() or attention == "sdpa"
        if grad:
            (hidden[real] * probe).sum().backward()
        results.append((hidden[real].detach(), [p.grad.clone() for p in model.parameters()] if grad else []))
    (ours, our_grads), (theirs, their_grads) = results
    tolerance = 1e-10 if dtype == torch.float64 else FLOAT32_TOLERANCE
    assert (ours - theirs).norm() <= tolerance * theirs.norm()
    for mine, reference in zip(our_grads, their_grads):  # summed in another order: compare norms
        assert (mine - reference).norm() <= tolerance * reference.norm()


def test_other_attention_kernels_keep_the_padded_forward(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), attn_implementation="sdpa")
    assert not supports_padding_free(model)  # sdpa would attend across the packed sequences' block mask only
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), padding_free=False)
    assert not supports_padding_free(model) and not shares_prefixes(model)


def test_prefix_sharing_can_be_turned_off(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), share_prefixes=False)
    assert supports_padding_free(model) and not shares_prefixes(model)


def test_features_read_low_run_only_the_blocks_up_to_them():
    """Layers [0, 1] (the embeddings, block 0's output) of a 4-block model: blocks 2 and 3 never
    run, and the states read are the full forward's to the bit (the same operations on the same
    inputs: rows without padding run unpacked)."""
    from alignloop.models.tiny import build_tiny_causal_lm

    model, _ = build_tiny_causal_lm(num_layers=4)
    model.eval()
    ran = []
    for index, block in enumerate(model.get_decoder().layers):
        block.register_forward_hook(lambda module, args, output, index=index: ran.append(index))
    ids = torch.tensor([[5, 6, 7, 8, 9], [11, 12, 5, 6, 10]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                     output_hidden_states=True).hidden_states
        ran.clear()
        low = last_hidden_states(model, ids, mask, positions_from_mask(mask), layers=[0, 1])
    assert ran == [0, 1]  # block 1 runs so that block 0's output is read before any final norm
    assert len(model.get_decoder().layers) == 4  # all four are back afterwards
    for k, layer in enumerate([0, 1]):
        assert torch.equal(low[k], full[layer])
