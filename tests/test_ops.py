"""Response-only logits give the same loss and gradients as projecting every position."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm
from alignloop.ops import IGNORE_INDEX, has_plain_output_layer, response_logits


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


def test_response_logits_match_the_full_projection_in_value_and_gradient():
    model, _ = build_tiny_causal_lm(seed=3)
    model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    assert has_plain_output_layer(model)
    batch = batch_with_prompt_masked()

    logits, targets = response_logits(model, batch)
    assert logits.shape[0] == targets.shape[0] == 5 + 2  # scored positions: 5 in row 0, 2 in row 1
    fast = F.cross_entropy(logits, targets, reduction="sum")
    fast.backward()
    fast_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()

    slow = full_logits_nll(model, batch)
    slow.backward()
    slow_grads = [p.grad for p in model.parameters() if p.requires_grad]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
