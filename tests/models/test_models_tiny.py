"""Tiny random models: deterministic, trainable, fast, and saved as ordinary HF folders."""

from __future__ import annotations

import time

import torch

from alignloop.models import build_tiny_causal_lm, load_model_and_tokenizer


def test_same_seed_same_model_other_seed_other_model(smol_tokenizer, prompt_batch, logits_of):
    first, _ = build_tiny_causal_lm(smol_tokenizer, seed=0)
    second, _ = build_tiny_causal_lm(smol_tokenizer, seed=0)
    other, _ = build_tiny_causal_lm(smol_tokenizer, seed=1)
    assert torch.equal(logits_of(first, prompt_batch), logits_of(second, prompt_batch))
    assert not torch.allclose(logits_of(first, prompt_batch), logits_of(other, prompt_batch))


def test_building_leaves_the_global_random_state_alone(smol_tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_causal_lm(smol_tokenizer, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_shape_follows_tokenizer_and_arguments(smol_tokenizer):
    model, tokenizer = build_tiny_causal_lm(smol_tokenizer, num_layers=3, hidden_size=32, num_heads=2, num_kv_heads=1)
    assert tokenizer is smol_tokenizer
    assert model.config.vocab_size == len(smol_tokenizer)
    assert model.config.num_hidden_layers == 3
    assert model.config.eos_token_id == smol_tokenizer.eos_token_id
    assert model.config.pad_token_id == smol_tokenizer.pad_token_id
    # Tied embeddings: the output layer is the input embedding, one tensor.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_forward_backward(smol_tokenizer, prompt_batch):
    model, _ = build_tiny_causal_lm(smol_tokenizer)
    model.train()
    labels = prompt_batch["input_ids"].masked_fill(prompt_batch["attention_mask"] == 0, -100)
    output = model(**prompt_batch, labels=labels)
    assert output.logits.shape == (2, prompt_batch["input_ids"].shape[1], len(smol_tokenizer))
    output.loss.backward()
    gradient = model.model.embed_tokens.weight.grad
    assert torch.isfinite(output.loss)
    assert gradient is not None and gradient.abs().sum() > 0


def test_build_is_fast_once_tokenizer_is_cached(smol_tokenizer):
    started = time.perf_counter()
    build_tiny_causal_lm(smol_tokenizer)
    assert time.perf_counter() - started < 1.0


def test_saved_folder_round_trips_through_load_model_and_tokenizer(
    tiny_model_dir, smol_tokenizer, prompt_batch, logits_of
):
    built, _ = build_tiny_causal_lm(smol_tokenizer, seed=0)
    loaded, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert torch.equal(logits_of(loaded, prompt_batch), logits_of(built, prompt_batch))
    assert tokenizer.chat_template == smol_tokenizer.chat_template
    assert tokenizer.pad_token_id == smol_tokenizer.pad_token_id
