"""An adapter trained on a built-in names the built-in's upstream hub id as its base, and still
loads offline (on the built-in) in every place alignloop reads adapters."""

from __future__ import annotations

import json

import pytest
import torch

from alignloop.evaluation.policy_eval import EvalConfig, plan_models
from alignloop.models import (
    ADAPTER_METADATA_FILE,
    BUILTIN_MODELS,
    BuiltinModel,
    LoraSettings,
    adapter_base_model,
    build_reward_model,
    builtin_model_dir,
    load_model_and_tokenizer,
    load_reward_model,
    save_reward_model,
    save_tiny_model,
    save_trained_model,
)
from alignloop.models.builtin import PROVENANCE_FILE

GHOST = BuiltinModel(name="ghost-1m", description="a tiny random Llama standing in for a built-in", params="1M",
                     package="alignloop-ghost-weights", package_version="9.9.9",
                     module="alignloop_ghost_weights_not_installed", gguf_file="ghost.gguf",
                     upstream="example-org/Ghost-1M")


@pytest.fixture
def ghost_builtin(smol_tokenizer, tmp_path, monkeypatch):
    """A prepared built-in (a tiny model in its cache folder), with the hub switched off."""
    monkeypatch.setenv("ALIGNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(BUILTIN_MODELS, GHOST.name, GHOST)
    folder = save_tiny_model(builtin_model_dir(GHOST.name), tokenizer=smol_tokenizer)
    (folder / PROVENANCE_FILE).write_text("{}")
    return folder


def _as_if_trained(model):
    """LoRA's B starts at zero (the adapter changes nothing); give it values."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5, generator=torch.Generator().manual_seed(len(name)))
    return model.eval()  # no LoRA dropout


def _trained_adapter(tmp_path):
    model, tokenizer = load_model_and_tokenizer(GHOST.name, lora=LoraSettings(r=4))
    return _as_if_trained(model), save_trained_model(model, tmp_path / "final", tokenizer=tokenizer)


def test_the_saved_adapter_names_the_upstream_id_and_keeps_the_builtin_in_alignloop_metadata(ghost_builtin,
                                                                                           tmp_path):
    model, folder = _trained_adapter(tmp_path)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == GHOST.upstream
    assert f"base_model: {GHOST.upstream}" in (folder / "README.md").read_text()  # peft's card too
    record = json.loads((folder / ADAPTER_METADATA_FILE).read_text())
    assert record["base_model"] == GHOST.name and record["base_model_path"] == str(ghost_builtin)
    assert "not the same weights" in record["note"]
    assert adapter_base_model(folder) == GHOST.name
    # The model in memory keeps its own record of where it came from.
    assert model.peft_config["default"].base_model_name_or_path == str(ghost_builtin)


def test_an_adapter_on_a_builtin_loads_offline_as_a_model_name(ghost_builtin, tmp_path):
    model, folder = _trained_adapter(tmp_path)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    expected = model(input_ids=ids).logits
    loaded, tokenizer = load_model_and_tokenizer(str(folder))
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)
    assert not torch.allclose(expected, load_model_and_tokenizer(GHOST.name)[0](input_ids=ids).logits, atol=1e-3)
    assert tokenizer.eos_token == "<|im_end|>"


def test_evaluation_finds_the_builtin_as_the_adapters_base(ghost_builtin, tmp_path):
    _, folder = _trained_adapter(tmp_path)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    plan = plan_models(EvalConfig.model_validate({"policy": str(folder), "prompts": str(prompts)}))
    assert (plan.base, plan.adapter, plan.reference) == (GHOST.name, str(folder), None)


def test_a_lora_reward_model_on_a_builtin_loads_offline(ghost_builtin, tmp_path):
    reward_model, tokenizer = build_reward_model(GHOST.name, lora=LoraSettings(r=4))
    _as_if_trained(reward_model)
    path = save_reward_model(reward_model, tmp_path / "rm", tokenizer)
    adapter_config = json.loads((path / "backbone" / "alignloop-adapter-config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == GHOST.upstream
    loaded, _ = load_reward_model(path)
    ids = torch.tensor([[1, 5, 9, 13]])
    mask = torch.ones_like(ids)
    assert torch.allclose(loaded(ids, mask), reward_model(ids, mask), atol=1e-5)


def test_an_adapter_on_any_other_base_is_saved_as_peft_saves_it(tiny_model_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), lora=LoraSettings(r=4))
    folder = save_trained_model(model, tmp_path / "final", tokenizer=tokenizer)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    assert not (folder / ADAPTER_METADATA_FILE).exists()
    assert adapter_base_model(folder) == str(tiny_model_dir)


def test_an_adapter_trained_on_in_a_later_round_still_records_the_builtin(ghost_builtin, tmp_path):
    _, first = _trained_adapter(tmp_path)
    model, tokenizer = load_model_and_tokenizer(GHOST.name, adapter=str(first))  # the loop's round 2
    again = save_trained_model(model, tmp_path / "round-2", tokenizer=tokenizer)
    assert json.loads((again / "adapter_config.json").read_text())["base_model_name_or_path"] == GHOST.upstream
    assert adapter_base_model(again) == GHOST.name
