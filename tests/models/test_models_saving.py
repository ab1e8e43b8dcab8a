"""save_trained_model: the final folder of a run loads back as exactly what was trained."""

from __future__ import annotations

import torch

from alignloop.models import (
    MERGED_SUBFOLDER,
    LoraSettings,
    apply_lora,
    build_tiny_causal_lm,
    is_lora_model,
    load_model_and_tokenizer,
    save_trained_model,
)


def _lora_model_with_nonzero_update(base_dir):
    model, _ = load_model_and_tokenizer(str(base_dir), lora=LoraSettings(r=4, dropout=0.0))
    with torch.no_grad():  # B starts at zero; make the adapter change the output
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=torch.Generator().manual_seed(0))
    return model


def test_full_model_folder_round_trips(smol_tokenizer, prompt_batch, tmp_path, logits_of):
    model, _ = build_tiny_causal_lm(smol_tokenizer, seed=5)
    folder = save_trained_model(model, tmp_path / "final", tokenizer=smol_tokenizer, merged=True)
    assert (folder / "config.json").is_file() and not (folder / MERGED_SUBFOLDER).exists()
    loaded, tokenizer = load_model_and_tokenizer(str(folder))
    assert torch.equal(logits_of(loaded, prompt_batch), logits_of(model, prompt_batch))
    assert tokenizer.chat_template == smol_tokenizer.chat_template


def test_lora_folder_holds_adapter_and_merged_model(tiny_model_dir, smol_tokenizer, prompt_batch, tmp_path, logits_of):
    model = _lora_model_with_nonzero_update(tiny_model_dir)
    trained_logits = logits_of(model, prompt_batch)
    base_logits = logits_of(load_model_and_tokenizer(str(tiny_model_dir))[0], prompt_batch)
    assert not torch.allclose(trained_logits, base_logits)

    folder = save_trained_model(model, tmp_path / "final", tokenizer=smol_tokenizer, merged=True)
    assert (folder / "adapter_config.json").is_file() and not (folder / "config.json").exists()
    # Merging worked on a copy: the model in memory still has its adapters and its outputs.
    assert is_lora_model(model)
    assert torch.equal(logits_of(model, prompt_batch), trained_logits)

    merged, tokenizer = load_model_and_tokenizer(str(folder / MERGED_SUBFOLDER))
    torch.testing.assert_close(logits_of(merged, prompt_batch), trained_logits, atol=1e-5, rtol=0)
    assert tokenizer.pad_token_id == smol_tokenizer.pad_token_id
    # The adapter folder alone loads too: transformers puts the adapter on the base it names.
    adapted, _ = load_model_and_tokenizer(str(folder))
    torch.testing.assert_close(logits_of(adapted, prompt_batch), trained_logits, atol=1e-6, rtol=0)


def test_lora_without_merge_writes_no_merged_folder(smol_tokenizer, tmp_path):
    model = apply_lora(build_tiny_causal_lm(smol_tokenizer)[0], LoraSettings(r=2))
    folder = save_trained_model(model, tmp_path / "final")
    assert (folder / "adapter_model.safetensors").is_file()
    assert not (folder / MERGED_SUBFOLDER).exists()
    assert not (folder / "tokenizer.json").exists()  # no tokenizer given, none written
