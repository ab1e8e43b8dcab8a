"""A saved reward model as a reward source, built from a recipe's `reward:` section."""

from __future__ import annotations

import pytest

from alignloop.rewards import RewardSourceConfig, build_reward_source

PROMPTS = ["What is the capital of France?", [{"role": "user", "content": "Hi"}]]
RESPONSES = ["Paris.", "Hello! How can I help?"]


def test_reward_model_source_scores_like_the_scorer(tiny_model_dir, tmp_path):
    import torch

    from alignloop.models import RewardScorer, build_reward_model, save_reward_model

    model, tokenizer = build_reward_model(str(tiny_model_dir))
    with torch.no_grad():
        model.head.bias.fill_(0.3)
    model.set_normalization(0.5, 2.0)
    folder = save_reward_model(model, tmp_path / "rm", tokenizer)

    config = RewardSourceConfig(type="reward_model", path=str(folder), batch_size=1, name="rm")
    source = build_reward_source(config)
    expected = RewardScorer.load(str(folder))(PROMPTS, RESPONSES)
    assert source.name == "rm"
    assert source(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)
    raw = build_reward_source(RewardSourceConfig(type="reward_model", path=str(folder), normalize=False))
    assert raw(PROMPTS, RESPONSES) == pytest.approx([s * 2.0 + 0.5 for s in expected], abs=1e-4)
