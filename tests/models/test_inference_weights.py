"""Sampling weights: a bf16 copy of the (LoRA-merged) weights inside the block, the very same
float32 tensors afterwards; the output layer gets a contiguous input."""

from __future__ import annotations

import torch

from alignloop.models import LoraSettings, apply_lora, build_tiny_causal_lm, lora_merged_for_inference
from alignloop.models.inference import contiguous_output_layer_input, weights_in_dtype


def _train_one_step(model, batch) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    optimizer.step()


def test_bf16_weights_inside_the_block_and_the_same_tensors_after(smol_tokenizer, prompt_batch, logits_of):
    model, _ = build_tiny_causal_lm(smol_tokenizer)  # tied embeddings
    before = {name: (p, p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}
    float32_logits = logits_of(model, prompt_batch)
    with weights_in_dtype(model, torch.bfloat16):
        assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in model.parameters())
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
        bf16_logits = logits_of(model, prompt_batch)
    assert bf16_logits.dtype == torch.bfloat16
    assert (bf16_logits.float() - float32_logits).abs().max() < 0.05 * float32_logits.abs().max()
    for name, p in model.named_parameters():
        original, values, requires_grad = before[name]
        assert p is original and p.dtype == torch.float32 and torch.equal(p, values) and p.requires_grad == requires_grad
    with weights_in_dtype(model, None):  # None: nothing changes
        assert all(p.dtype == torch.float32 for p in model.parameters())


def test_lora_merged_in_bf16_is_the_float32_sum_rounded_once(smol_tokenizer, prompt_batch):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer)[0], LoraSettings(r=4, dropout=0.0))
    _train_one_step(model, prompt_batch)  # B != 0
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = (q_proj.base_layer.weight + q_proj.get_delta_weight("default")).detach().to(torch.bfloat16)
    with lora_merged_for_inference(model, torch.bfloat16):
        assert q_proj.merged and torch.equal(q_proj.base_layer.weight, expected)
    assert q_proj.base_layer.weight.dtype == torch.float32 and not q_proj.merged


def test_the_output_layer_sees_a_contiguous_input_only_inside_the_block(smol_tokenizer):
    model, _ = build_tiny_causal_lm(smol_tokenizer)
    head = model.get_output_embeddings()
    seen = []
    head.register_forward_hook(lambda _, args, __: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(2, 5, head.in_features)[:, -1:, :]  # the strided slice generation projects
    with contiguous_output_layer_input(model):
        head(hidden)
    head(hidden)
    assert seen == [True, False]
