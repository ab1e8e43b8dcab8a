"""LoRA: only adapters train, disabling them gives the base model, merging and saving are exact."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError

from alignloop.models import (
    LoraSettings,
    adapters_disabled,
    apply_lora,
    build_tiny_causal_lm,
    count_trainable_parameters,
    is_lora_model,
    lora_merged_for_inference,
    merge_lora,
    save_adapter,
)


def _train_one_step(model, batch) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    optimizer.step()


def test_only_adapter_parameters_are_trainable(smol_tokenizer):
    base, _ = build_tiny_causal_lm(smol_tokenizer)
    _, total_before = count_trainable_parameters(base)
    model = apply_lora(base, LoraSettings(r=4))
    trainable, total = count_trainable_parameters(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)
    assert 0 < trainable < total
    assert total == total_before + trainable
    assert is_lora_model(model)


def test_target_modules_list_limits_adapters(smol_tokenizer):
    base, _ = build_tiny_causal_lm(smol_tokenizer)
    model = apply_lora(base, LoraSettings(target_modules=["q_proj"]))
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {"q_proj"}


def test_settings_validation():
    assert LoraSettings().target_modules == "all-linear"
    with pytest.raises(ValidationError):
        LoraSettings(target_modules="q_proj")  # a single name must be a list
    with pytest.raises(ValidationError):
        LoraSettings(rank=4)
    with pytest.raises(ValidationError):
        LoraSettings(r=0)


def test_lora_round_trip_after_a_training_step(smol_tokenizer, prompt_batch, tmp_path, logits_of):
    base, _ = build_tiny_causal_lm(smol_tokenizer, seed=3)
    base_logits = logits_of(base, prompt_batch)
    model = apply_lora(base, LoraSettings(r=4, dropout=0.0))
    _train_one_step(model, prompt_batch)
    peft_logits = logits_of(model, prompt_batch)
    assert not torch.allclose(peft_logits, base_logits), "the step should have moved the adapters"

    with adapters_disabled(model) as reference:
        assert torch.equal(logits_of(reference, prompt_batch), base_logits)
    assert torch.equal(logits_of(model, prompt_batch), peft_logits)  # back on after the block

    adapter_dir = save_adapter(model, tmp_path / "adapter")
    fresh_base, _ = build_tiny_causal_lm(smol_tokenizer, seed=3)
    reloaded = PeftModel.from_pretrained(fresh_base, str(adapter_dir))
    torch.testing.assert_close(logits_of(reloaded, prompt_batch), peft_logits, atol=1e-6, rtol=0)

    merged = merge_lora(model)
    assert not is_lora_model(merged)
    torch.testing.assert_close(logits_of(merged, prompt_batch), peft_logits, atol=1e-5, rtol=0)


def test_helpers_on_a_plain_model(smol_tokenizer, prompt_batch, tmp_path, logits_of):
    model, _ = build_tiny_causal_lm(smol_tokenizer)
    expected = logits_of(model, prompt_batch)
    with adapters_disabled(model) as same:
        assert same is model
        assert torch.equal(logits_of(same, prompt_batch), expected)
    trainable, total = count_trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    with pytest.raises(TypeError, match="no LoRA adapters"):
        save_adapter(model, tmp_path / "adapter")
    with pytest.raises(TypeError, match="no LoRA adapters"):
        merge_lora(model)


def test_apply_twice_is_refused(smol_tokenizer):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer)[0], LoraSettings())
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, LoraSettings())


def test_merged_for_inference_computes_the_same_and_restores_the_weights(smol_tokenizer, prompt_batch, logits_of):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer)[0], LoraSettings(r=4, dropout=0.0))
    _train_one_step(model, prompt_batch)  # B != 0: the merge really changes the weights
    weights = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    unmerged = logits_of(model, prompt_batch)
    with lora_merged_for_inference(model):
        q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
        assert q_proj.merged and not q_proj.base_layer.weight.requires_grad
        merged = logits_of(model, prompt_batch)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert not q_proj.merged
    for name, p in model.named_parameters():  # the same tensors, bit for bit
        assert p is weights[name][0] and torch.equal(p, weights[name][1]), name
    _train_one_step(model, prompt_batch)  # gradients still reach the adapters


def test_input_casts_are_skipped_only_where_they_change_nothing(smol_tokenizer, prompt_batch):
    from peft.tuners.lora import LoraLayer

    model = apply_lora(build_tiny_causal_lm(smol_tokenizer)[0], LoraSettings(r=4, dropout=0.0))
    _train_one_step(model, prompt_batch)  # B != 0: the adapters take part
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)  # float32 adapters on a float32 base
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        skipped = model(**prompt_batch).logits
        for m in layers:
            m.cast_input_dtype_enabled = True  # peft's default
        cast = model(**prompt_batch).logits
    assert torch.equal(skipped, cast)  # bf16 -> float32 -> bf16 is exact

    half_base = build_tiny_causal_lm(smol_tokenizer)[0].to(torch.bfloat16)
    mixed = apply_lora(half_base, LoraSettings(r=4, dropout=0.0))  # peft keeps the adapters in float32
    mixed_layers = [m for m in mixed.modules() if isinstance(m, LoraLayer)]
    assert mixed_layers[0].lora_A["default"].weight.dtype == torch.float32
    assert all(m.cast_input_dtype_enabled for m in mixed_layers)  # needed there: bf16 inputs, float32 adapters
    with torch.no_grad():
        assert torch.isfinite(mixed(**prompt_batch).logits).all()
