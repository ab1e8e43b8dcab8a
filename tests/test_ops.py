"""Response-only logits give the same loss and gradients as projecting every position; the
slab-wise log-softmax and entropy give those of the whole logit matrix."""

from __future__ import annotations

import math
import pytest
import torch
from float64_models import in_float64
import torch.nn.functional as F

from alignloop import ops
from alignloop.losses import entropy_from_logits
from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm
from alignloop.models.forward import has_plain_output_layer, response_logits
from alignloop.ops import IGNORE_INDEX, selective_log_softmax


def batch_with_prompt_masked():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 500, (2, 9), generator=generator)
    labels = input_ids.clone()
    labels[0, :4] = IGNORE_INDEX  # prompt of row 0
    labels[1, :6] = IGNORE_INDEX  # prompt of row 1
    labels[1, 8] = IGNORE_INDEX  # padding
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def full_logits_nll(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_response_logits_match_the_full_projection_in_value_and_gradient(dtype):
    model, _ = build_tiny_causal_lm(seed=3)
    with torch.random.fork_rng(devices=[]):  # the adapters' A matrices come from the global RNG
        torch.manual_seed(0)
        model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    if dtype == torch.float64:  # the same arithmetic, reordered: agrees to ~5e-16
        in_float64(model)
    assert has_plain_output_layer(model)
    batch = batch_with_prompt_masked()

    logits, targets = response_logits(model, batch)
    assert logits.shape[0] == targets.shape[0] == 5 + 2  # scored positions: 5 in row 0, 2 in row 1
    assert logits.dtype == dtype
    fast = F.cross_entropy(logits, targets, reduction="sum")
    fast.backward()
    fast_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()

    slow = full_logits_nll(model, batch)
    slow.backward()
    slow_grads = [p.grad for p in model.parameters() if p.requires_grad]
    # float32: the loss and the gradients go through sums over the V = 49,152 vocabulary entries
    # (the log-softmax, the output layer's backward), which BLAS orders by the matrix shape: 7
    # scored rows here, 18 positions there (on the 2-core AVX2 EPYC the gradients land 4e-6
    # from float64's here, 8e-7 there). A sum of V terms rounds to about sqrt(V)·eps of the sum
    # of their magnitudes (V·eps at worst); in the output layer's backward, Σ (p_v - [v = target])
    # W_v with a near-uniform p, that sum is about twice the result (the target's row plus the
    # mean |W_v|): 2·sqrt(V)·eps = 5.3e-5 of the result.
    vocabulary = logits.shape[-1]
    tolerance = 1e-10 if dtype == torch.float64 else 2 * math.sqrt(vocabulary) * torch.finfo(torch.float32).eps
    assert abs(fast - slow) <= tolerance * abs(slow)
    for a, b in zip(fast_grads, slow_grads):  # summed in another order: compare norms
        assert (a - b).norm() <= tolerance * b.norm()


# --- slab-wise reductions over the vocabulary ----------------------------------------------

def test_selective_log_softmax_by_hand_in_float32_even_for_bf16_logits():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]], dtype=torch.bfloat16)
    logps = selective_log_softmax(logits, torch.tensor([1, 0]))
    assert logps.dtype == torch.float32
    torch.testing.assert_close(logps, torch.tensor([math.log(0.75), math.log(0.5)]), atol=2e-3, rtol=0)
    assert selective_log_softmax(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_slabs_give_the_values_and_gradients_of_the_whole_matrix(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(23, 50, generator=generator, dtype=torch.float64) * 4).requires_grad_()
    logits.data[3, 7] = -math.inf  # a token ruled out
    targets = torch.randint(0, 50, (23,), generator=generator)
    targets[3] = 8
    monkeypatch.setattr(ops, "LOGIT_SLAB_ELEMENTS", 5 * 50)  # 5 slabs of 5 rows and one of 3
    assert [len(s) for s in ops.logit_slabs(logits)] == [5, 5, 5, 5, 3]

    value = selective_log_softmax(logits, targets).sum() + 0.5 * entropy_from_logits(logits).sum()
    (grad,) = torch.autograd.grad(value, logits)
    log_p = torch.log_softmax(logits, -1)
    whole = log_p.gather(-1, targets[:, None]).sum() - 0.5 * (log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum()
    (whole_grad,) = torch.autograd.grad(whole, logits)
    torch.testing.assert_close(value, whole)
    torch.testing.assert_close(grad, whole_grad)
    assert torch.isfinite(grad).all() and grad[3, 7] == 0
