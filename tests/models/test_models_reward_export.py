"""Reward models as transformers AutoModelForSequenceClassification folders: plain transformers
loads an export and scores as alignloop does; alignloop reads such folders (its own exports, and
classifiers trained elsewhere) as reward models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignloop.data import Message, encode_prompt_response
from alignloop.models import (
    LoraSettings,
    RewardScorer,
    build_reward_model,
    export_sequence_classifier,
    is_sequence_classifier_folder,
    save_reward_model,
    score_texts,
)
from alignloop.rewards import RewardSourceConfig, build_reward_source
from cli_in_process import alignloop_in_process

PROMPTS = ["What is the capital of France?", [Message(role="user", content="Hi")], "Name a colour."]
RESPONSES = ["Paris.", "Hello! How can I help?", "Blue"]
# The comparisons below run the backbone in float64 on both sides, so the two implementations
# (alignloop's padding-free body + float32 head; transformers' padded forward + a float64 score
# layer) differ by float64 reordering (~1e-13) and by the float32 head: a 64-term dot product of
# O(0.1) weights and O(1) hidden states rounds to ~1e-7. Scores are O(1).
TOLERANCE = 1e-5


def trained_looking(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.head.weight.normal_(std=0.1, generator=generator)
        model.head.bias.fill_(0.3)
        for name, parameter in model.backbone.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1, generator=generator)
    model.set_normalization(0.5, 2.0)
    return model.eval()


def transformers_logits(folder, tokenizer, prompts, responses, dtype=torch.float32):
    """What a user of plain transformers gets: the saved tokenizer (right padding), the model's own forward."""
    classifier = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype).eval()
    saved_tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = [saved_tokenizer.decode(sum(encode_prompt_response(tokenizer, p, r), [])) for p, r in zip(prompts, responses)]
    batch = saved_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert saved_tokenizer.padding_side == "right"
    with torch.no_grad():
        return classifier(**batch).logits.squeeze(-1).tolist()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_plain_transformers_scores_an_export_as_alignloop_does(tiny_model_dir, tmp_path, lora):
    fields = {"lora": LoraSettings(r=4, alpha=8)} if lora else {}
    model, tokenizer = build_reward_model(str(tiny_model_dir), **fields)
    model = trained_looking(model)
    model.backbone.double()  # see TOLERANCE
    raw = score_texts(model, tokenizer, PROMPTS, RESPONSES, normalize=False)
    normalized = score_texts(model, tokenizer, PROMPTS, RESPONSES, normalize=True)

    folder = export_sequence_classifier(model, tokenizer, tmp_path / "hf")
    assert is_sequence_classifier_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["architectures"] == ["LlamaForSequenceClassification"]
    stored = config["alignloop_reward"]
    assert (stored["bias"], stored["score_mean"], stored["score_std"]) == (pytest.approx(0.3), 0.5, 2.0)

    logits = transformers_logits(folder, tokenizer, PROMPTS, RESPONSES, dtype=torch.float64)
    assert [x + stored["bias"] for x in logits] == pytest.approx(raw, abs=TOLERANCE)
    assert [(x + stored["bias"] - 0.5) / 2.0 for x in logits] == pytest.approx(normalized, abs=TOLERANCE)
    # alignloop reads the export back as a reward model (float32 here, as transformers then)
    logits32 = transformers_logits(folder, tokenizer, PROMPTS, RESPONSES)
    scores = RewardScorer.load(str(folder), normalize=False)(PROMPTS, RESPONSES)
    assert scores == pytest.approx([x + stored["bias"] for x in logits32], abs=TOLERANCE)
    source = build_reward_source(RewardSourceConfig(type="reward_model", path=str(folder)))
    assert list(source.score(PROMPTS, RESPONSES)) == pytest.approx([(x - 0.5) / 2.0 for x in scores], abs=TOLERANCE)
    # the reward model exported is left as it was (LoRA not merged into it)
    assert score_texts(model, tokenizer, PROMPTS, RESPONSES, normalize=False) == raw


def test_a_classifier_trained_elsewhere_is_a_reward_model_source(tiny_model_dir, smol_tokenizer, tmp_path):
    """A plain transformers classifier (what TRL's RewardTrainer saves): no alignloop keys, so
    its rewards are its logits."""
    classifier = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    classifier.config.pad_token_id = smol_tokenizer.pad_token_id
    classifier.save_pretrained(str(tmp_path / "trl-rm"))
    smol_tokenizer.save_pretrained(str(tmp_path / "trl-rm"))
    logits = transformers_logits(tmp_path / "trl-rm", smol_tokenizer, PROMPTS, RESPONSES)
    scorer = RewardScorer.load(str(tmp_path / "trl-rm"))
    assert scorer(PROMPTS, RESPONSES) == pytest.approx(logits, abs=TOLERANCE)


def test_rm_export_command(tiny_model_dir, tmp_path):
    model, tokenizer = build_reward_model(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8))
    save_reward_model(trained_looking(model), tmp_path / "rm", tokenizer)
    done = alignloop_in_process("rm", "export", "--model", tmp_path / "rm", "--out", tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    assert "alignloop's raw reward is logits + 0.3, normalised (raw - 0.5) / 2" in " ".join(done.stdout.split())
    assert is_sequence_classifier_folder(tmp_path / "hf")
