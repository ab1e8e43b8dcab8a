"""save_reward_model / load_reward_model: one folder, one call back, the same scores."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alignloop.models import (
    LoraSettings,
    ModelLoadError,
    RewardScorer,
    build_reward_model,
    is_lora_model,
    load_model_and_tokenizer,
    load_reward_model,
    read_reward_metadata,
    save_reward_model,
    save_tiny_model,
    score_texts,
)

PROMPTS = ["What is the capital of France?", [{"role": "user", "content": "Hi"}], "Name a colour."]
RESPONSES = ["Paris.", "Hello! How can I help?", "Blue"]


def _trained_looking(model):
    """Move the head, thresholds and adapters off their initial values, as training would."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head.bias.fill_(0.3)
        for name, parameter in model.backbone.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=generator)
    model.set_normalization(0.5, 2.0)
    return model


def _scores(model, tokenizer):
    return score_texts(model, tokenizer, PROMPTS, RESPONSES, batch_size=2, normalize=True)


def test_full_backbone_round_trip(tiny_model_dir, tmp_path):
    model, tokenizer = build_reward_model(str(tiny_model_dir), num_rating_classes=4)
    model = _trained_looking(model)
    expected = _scores(model, tokenizer)
    folder = save_reward_model(model, tmp_path / "rm", tokenizer, extra={"data_hash": "abc", "eval/accuracy": 0.75})

    assert sorted(p.name for p in folder.iterdir()) == ["backbone", "reward_head.safetensors", "reward_model.json"]
    assert (folder / "backbone" / "alignloop-backbone-config.json").is_file()
    assert (folder / "backbone" / "tokenizer.json").is_file()
    # The trap this closes: transformers would load the backbone as a classifier with a random head.
    with pytest.raises((OSError, ValueError), match="config.json"):
        AutoModelForSequenceClassification.from_pretrained(str(folder / "backbone"), num_labels=1)
    metadata = read_reward_metadata(folder)
    assert metadata["backbone"] == "full" and metadata["base_model"] == str(tiny_model_dir)
    assert (metadata["score_mean"], metadata["score_std"], metadata["hidden_size"]) == (0.5, 2.0, 64)
    assert metadata["num_rating_classes"] == 4
    assert metadata["extra"] == {"data_hash": "abc", "eval/accuracy": 0.75}

    loaded, loaded_tokenizer = load_reward_model(folder)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.normalization == (0.5, 2.0)
    assert torch.equal(loaded.rating_thresholds, model.rating_thresholds)
    assert _scores(loaded, loaded_tokenizer) == pytest.approx(expected, abs=1e-5)
    assert RewardScorer.load(str(folder), batch_size=3)(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)


def test_lora_backbone_round_trip(tmp_path):
    base_dir = save_tiny_model(tmp_path / "base", seed=7)
    model, tokenizer = build_reward_model(str(base_dir), lora=LoraSettings(r=4, dropout=0.0))
    model = _trained_looking(model)
    expected = _scores(model, tokenizer)
    assert expected != pytest.approx(_scores(build_reward_model(str(base_dir))[0], tokenizer), abs=1e-3)
    folder = save_reward_model(model, tmp_path / "rm", tokenizer)
    assert (folder / "backbone" / "alignloop-adapter-config.json").is_file()
    assert not (folder / "backbone" / "adapter_config.json").exists()
    assert read_reward_metadata(folder)["backbone"] == "lora"

    loaded, loaded_tokenizer = load_reward_model(folder)
    assert is_lora_model(loaded.backbone)
    assert _scores(loaded, loaded_tokenizer) == pytest.approx(expected, abs=1e-5)
    # Neither transformers nor peft takes the adapter folder alone (a random score head).
    with pytest.raises(ModelLoadError, match="does not hold a loadable"):
        load_model_and_tokenizer(str(folder / "backbone"))

    trainable, _ = load_reward_model(folder, trainable=True)
    names = [name for name, p in trainable.named_parameters() if p.requires_grad]
    assert "head.weight" in names and all(n.startswith("head.") or "lora_" in n for n in names)

    # The base folder moves away: a clear error, and base_model= points to a copy.
    moved = shutil.move(str(base_dir), str(tmp_path / "moved-base"))
    with pytest.raises(ModelLoadError, match="base_model="):
        load_reward_model(folder)
    relocated, _ = load_reward_model(folder, base_model=moved)
    assert _scores(relocated, loaded_tokenizer) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_a_format_1_folder_with_the_usual_config_names_still_loads(tiny_model_dir, tmp_path, lora):
    model, tokenizer = build_reward_model(str(tiny_model_dir), lora=LoraSettings(r=4, dropout=0.0) if lora else None)
    model = _trained_looking(model)
    folder = save_reward_model(model, tmp_path / "rm", tokenizer)
    for hidden, usual in (("alignloop-backbone-config.json", "config.json"),
                          ("alignloop-adapter-config.json", "adapter_config.json")):
        if (folder / "backbone" / hidden).is_file():
            (folder / "backbone" / hidden).rename(folder / "backbone" / usual)
    metadata = json.loads((folder / "reward_model.json").read_text())
    (folder / "reward_model.json").write_text(json.dumps({**metadata, "format_version": 1}))
    loaded, loaded_tokenizer = load_reward_model(folder)
    assert _scores(loaded, loaded_tokenizer) == pytest.approx(_scores(model, tokenizer), abs=1e-5)


def test_a_folder_that_is_not_a_reward_model(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_reward_model(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="reward_model.json is missing"):
        load_reward_model(tiny_model_dir)  # a plain model folder
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "reward_model.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ModelLoadError, match="reward_head.safetensors is missing"):
        load_reward_model(partial)
    (partial / "reward_model.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelLoadError, match="format_version 99"):
        load_reward_model(partial)


def test_saving_replaces_a_reward_model_but_nothing_else(tmp_path, smol_tokenizer):
    base_dir = save_tiny_model(tmp_path / "base", tokenizer=smol_tokenizer)
    folder = tmp_path / "rm"
    save_reward_model(build_reward_model(str(base_dir), lora=LoraSettings(r=2))[0], folder)
    save_reward_model(build_reward_model(str(base_dir))[0], folder)  # full over LoRA: no stale adapter
    assert not (folder / "backbone" / "adapter_config.json").exists()
    assert read_reward_metadata(folder)["backbone"] == "full"
    with pytest.raises(FileExistsError, match="not a saved reward model"):
        save_reward_model(build_reward_model(str(base_dir))[0], base_dir)
    with pytest.raises(TypeError):
        save_reward_model(build_reward_model(str(base_dir))[0], tmp_path / "bad", extra={"x": object()})
    assert not (tmp_path / "bad").exists()
