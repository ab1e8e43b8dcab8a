"""Resolving a model name (built-in, folder, hub id) and loading it as a ModelConfig says."""

from __future__ import annotations

import time

import pytest
import torch

from alignloop.config import ConfigError, validate_config
from alignloop.models.attention import AUTO_ATTENTION
from alignloop.models import (
    LoraSettings,
    ModelConfig,
    ModelLoadError,
    is_lora_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_model_source,
)

SMOL = "smollm2-135m-instruct"


@pytest.mark.parametrize("name", ["no-such-model", "someone/no-such-model"])
def test_unknown_name_fails_fast_offline_and_lists_builtins(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=f"neither a built-in.*{SMOL}"):
        load_model_and_tokenizer(name)
    with pytest.raises(ModelLoadError, match=SMOL):
        load_tokenizer(name)
    assert time.perf_counter() - started < 2.0  # not waiting on network retries


def test_nonexistent_path_lists_builtins(tmp_path):
    missing = tmp_path / "not-here"
    with pytest.raises(ModelLoadError, match=f"no such folder.*{SMOL}"):
        load_model_and_tokenizer(str(missing))


def test_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not hold a loadable"):
        load_model_and_tokenizer(str(tmp_path))


def test_model_load_error_is_a_value_error():
    assert issubclass(ModelLoadError, ValueError)


def test_resolution_order(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert resolve_model_source(str(tiny_model_dir)) == str(tiny_model_dir)
    # Online, anything shaped like a hub id is passed on to the hub unchanged (not fetched here).
    assert resolve_model_source("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_builtin_tokenizer_does_not_prepare_the_model(smol_tokenizer, alignloop_home):
    tokenizer = load_tokenizer(SMOL)
    assert tokenizer.chat_template == smol_tokenizer.chat_template
    assert not (alignloop_home / "models" / SMOL).exists()


def test_config_options_are_applied(tiny_model_dir):
    config = ModelConfig(
        name=str(tiny_model_dir), dtype="bfloat16", gradient_checkpointing=True, lora=LoraSettings(r=4)
    )
    model, tokenizer = load_model_and_tokenizer(config)
    assert is_lora_model(model)
    base = model.get_base_model()
    assert base.model.embed_tokens.weight.dtype == torch.bfloat16
    assert base.is_activation_checkpointing
    assert base.config._attn_implementation == AUTO_ATTENTION  # `auto`, the default
    assert tokenizer.pad_token_id is not None


def test_keyword_fields_override_a_name_or_config(tiny_model_dir):
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_tokenizer(ModelConfig(name=str(tiny_model_dir)), dtype="float8")


def test_model_config_rejects_unknown_keys_with_their_name():
    with pytest.raises(ConfigError, match="lora.rank"):
        validate_config(ModelConfig, {"name": SMOL, "lora": {"rank": 4}})
    assert ModelConfig().name == SMOL
    assert all(field.description for field in ModelConfig.model_fields.values())


def test_a_saved_adapter_is_loaded_trainable_on_its_base(tiny_model_dir, tmp_path):
    from alignloop.models import LoraSettings, adapters_disabled, save_adapter

    model, _ = load_model_and_tokenizer(ModelConfig(name=str(tiny_model_dir), lora=LoraSettings(r=2, alpha=4, dropout=0.0)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter changes the outputs
    save_adapter(model, tmp_path / "adapter")
    ids = torch.arange(3, 15).unsqueeze(0)
    expected = model(ids).logits
    again, _ = load_model_and_tokenizer(ModelConfig(name=str(tiny_model_dir), adapter=str(tmp_path / "adapter")))
    assert torch.allclose(again(ids).logits, expected, atol=1e-5)
    assert any(p.requires_grad for n, p in again.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in again.named_parameters() if "lora_" not in n)
    with adapters_disabled(again):  # the base underneath is the reference
        assert not torch.allclose(again(ids).logits, expected, atol=1e-3)
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        load_model_and_tokenizer(ModelConfig(name=str(tiny_model_dir), adapter=str(tmp_path)))
