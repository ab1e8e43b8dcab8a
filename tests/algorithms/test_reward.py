"""Reward-model training on a tiny model: mixed judgement kinds, saving, scoring, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignloop.algorithms.reward import RewardConfig, RewardMethod, RewardSettings, collate_judgements, run_reward
from alignloop.config import load_config
from alignloop.data import encode_preference_records, read_preference_data
from alignloop.losses import bradley_terry, plackett_luce, rating_regression
from alignloop.models import build_reward_model, load_reward_model, read_reward_metadata
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "rm-tiny-cpu.yaml"


def config(tiny_model_dir, out, *overrides) -> RewardConfig:
    return load_config(RewardConfig, RECIPE, [f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides])


def test_mixed_batch_loss_is_the_sum_of_its_parts(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path)
    model, tokenizer = build_reward_model(cfg.model)
    data = read_preference_data(cfg.data)
    encoded, _ = encode_preference_records(tokenizer, data.train, max_length=128)
    items = [encoded.pairs[0], encoded.pairs[1], encoded.rankings[0], encoded.ratings[0]]
    batch = collate_judgements(items, tokenizer.pad_token_id)
    method = RewardMethod(RewardSettings())
    assert method.count_items(batch) == 4

    with torch.no_grad():
        out = method.loss(model, batch)
        pair_scores = model(batch["pairs"]["input_ids"], batch["pairs"]["attention_mask"])
        ranking_scores = model(batch["rankings"]["input_ids"], batch["rankings"]["attention_mask"])
        rating_scores = model(batch["ratings"]["input_ids"], batch["ratings"]["attention_mask"])
    expected = (
        bradley_terry(pair_scores[:2], pair_scores[2:])[0]
        + plackett_luce(ranking_scores[None, :], torch.tensor([[1, 2, 3]]))[0]
        + rating_regression(rating_scores, torch.tensor([5.0]), 1.0, 5.0)[0]
    )
    torch.testing.assert_close(out.loss_sum, expected, atol=1e-5, rtol=1e-5)


def test_each_judgements_weight_scales_its_training_loss_and_not_its_held_out_loss(tiny_model_dir, tmp_path):
    from dataclasses import replace

    cfg = config(tiny_model_dir, tmp_path)
    model, tokenizer = build_reward_model(cfg.model)
    encoded, _ = encode_preference_records(tokenizer, read_preference_data(cfg.data).train, max_length=128)
    pairs = [replace(encoded.pairs[0], weight=0.25), replace(encoded.pairs[1], weight=0.0)]
    ranking = replace(encoded.rankings[0], weight=2.0)
    batch = collate_judgements([*pairs, ranking], tokenizer.pad_token_id)
    method = RewardMethod(RewardSettings())
    model.eval()  # no dropout; the weights apply in training mode only
    with torch.no_grad():
        pair_scores = model(batch["pairs"]["input_ids"], batch["pairs"]["attention_mask"]).double()
        ranking_scores = model(batch["rankings"]["input_ids"], batch["rankings"]["attention_mask"]).double()
        held_out = method.loss(model, batch).loss_sum
        model.train()
        trained = method.loss(model, batch).loss_sum
    pair_losses = -torch.nn.functional.logsigmoid(pair_scores[:2] - pair_scores[2:])  # (2,)
    ranking_loss = plackett_luce(ranking_scores[None, :], torch.tensor([[1, 2, 3]]))[0]
    torch.testing.assert_close(trained.double(), 0.25 * pair_losses[0] + 2.0 * ranking_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(held_out.double(), pair_losses.sum() + ranking_loss, atol=1e-5, rtol=1e-5)


def test_training_saves_a_normalised_reward_model_with_its_evaluation(tiny_model_dir, tmp_path):
    result = run_reward(config(tiny_model_dir, tmp_path, "train.max_steps=12"))
    metadata = read_reward_metadata(result.final_model_dir)
    assert metadata["score_std"] != 1.0 and math.isfinite(metadata["score_mean"])
    evaluation = json.loads((tmp_path / "eval_results.json").read_text())
    assert evaluation["pairs/count"] == 24 and 0.0 <= evaluation["pairs/accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and "eval/rewards/accuracies" in records[0]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 12 and losses[-1] < losses[0]


def test_ordinal_ratings_learn_thresholds(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, "data.train=[recipes/data/calm-ratings.jsonl]", "data.eval=[]",
                 "reward.rating_loss=ordinal", "reward.rating_classes=5", "train.max_steps=3")
    result = run_reward(cfg)
    model, _ = load_reward_model(result.final_model_dir)
    assert model.rating_thresholds is not None and model.rating_thresholds.shape == (4,)


def test_rm_score_and_eval_commands(tiny_model_dir, tmp_path):
    trained = run_reward(config(tiny_model_dir, tmp_path / "run", "train.max_steps=2")).final_model_dir
    scored = tmp_path / "scored.jsonl"
    done = alignloop_in_process("rm", "score", "--model", str(trained), "--input", "recipes/data/calm-replies-eval.jsonl",
                     "--output", str(scored))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert len(rows) == 24 and all(math.isfinite(row["reward"]) for row in rows)
    assert rows[0]["prompt"] and rows[0]["response"]

    done = alignloop_in_process("rm", "eval", "--model", str(trained), "--data", "recipes/data/calm-pairs-eval.jsonl")
    assert done.returncode == 0, done.stderr
    assert "pairs/accuracy" in done.stdout and "pairs/calibration_error" in done.stdout and "{" not in done.stdout

    done = alignloop_in_process("rm", "score", "--model", str(trained), "--input", "recipes/data/calm-replies-eval.jsonl",
                                "--output", str(scored), "--aggregate", "median")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'--aggregate'" in done.stderr and "'median'" in done.stderr  # the option and the value refused


def test_identical_pair_is_a_named_error_when_asked(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "same", "rejected": "same"}\n')
    done = alignloop_in_process("rm", "train", "--config", str(RECIPE), f"model.name={tiny_model_dir}",
                     f"train.output_dir={tmp_path / 'out'}", f"data.train=[{data}]", "data.eval=[]",
                     "data.on_invalid=error")
    assert done.returncode == 2
    assert "pairs.jsonl:2" in done.stderr and "identical" in done.stderr and "Traceback" not in done.stderr


def test_a_mean_pooling_reward_model_trains_on_its_response_tokens_and_is_saved_as_such(tiny_model_dir, tmp_path):
    result = run_reward(config(tiny_model_dir, tmp_path, "train.max_steps=6", "reward.pooling=mean"))
    assert read_reward_metadata(result.final_model_dir)["pooling"] == "mean"
    model, _ = load_reward_model(result.final_model_dir)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert model.pooling == "mean" and len(losses) == 6 and losses[-1] < losses[0]
    # The loss sees the same scores as scoring: the prompt's tokens are outside the pooled mean.
    cfg = config(tiny_model_dir, tmp_path / "x")
    data = read_preference_data(cfg.data)
    _, tokenizer = build_reward_model(cfg.model)
    encoded, _ = encode_preference_records(tokenizer, data.train, max_length=128)
    batch = collate_judgements(encoded.pairs[:2], tokenizer.pad_token_id)["pairs"]
    from alignloop.models.reward_model import response_mask_of

    with torch.no_grad():
        masked = model(batch["input_ids"], batch["attention_mask"], response_mask=response_mask_of(batch))
        everything = model(batch["input_ids"], batch["attention_mask"], response_mask=batch["attention_mask"].bool())
    assert not torch.allclose(masked, everything)


def test_frozen_features_are_the_models_own_and_computed_once_per_distinct_row(tiny_model_dir, tmp_path):
    from alignloop.models.frozen_features import FrozenFeatures
    from alignloop.models.reward_model import response_mask_of

    cfg = config(tiny_model_dir, tmp_path)
    model, tokenizer = build_reward_model(cfg.model, pooling="mean")
    encoded, _ = encode_preference_records(tokenizer, read_preference_data(cfg.data).train, max_length=128)
    batch = collate_judgements(encoded.rankings[:2], tokenizer.pad_token_id)["rankings"]
    rows = (batch["input_ids"], batch["attention_mask"], batch["prefix_groups"], response_mask_of(batch))
    passes = []
    model.backbone.get_decoder().register_forward_hook(lambda module, args, out: passes.append(1))
    cache = FrozenFeatures()
    model.train()  # the cache computes in eval mode whatever the model's, and leaves the mode as it was
    cached = cache(model, *rows)
    assert model.training and len(passes) == 1 and len(cache) == batch["input_ids"].shape[0]
    with torch.no_grad():
        torch.testing.assert_close(cached, model.eval().features(*rows))
    # Shuffled, and one row in a batch of its own: read back, no backbone pass.
    order = torch.randperm(len(rows[0]), generator=torch.Generator().manual_seed(0))
    passes.clear()
    shuffled = cache(model, *(tensor[order] for tensor in rows[:2]), None, rows[3][order])
    single = cache(model, rows[0][:1, :], rows[1][:1, :], None, rows[3][:1, :])
    assert passes == [] and torch.equal(shuffled, cached[order]) and torch.equal(single, cached[:1])


@pytest.mark.parametrize("layers", [None, [0, 2]], ids=["last-layer", "feature-layers"])
def test_a_frozen_backbone_trains_the_head_alone_with_the_same_loss_as_uncached(tiny_model_dir, tmp_path, layers):
    from alignloop.models.frozen_features import FrozenFeatures

    from accelerate.utils import set_seed

    cfg = config(tiny_model_dir, tmp_path, "train.max_steps=8", "train.lr=1e-2", "reward.backbone=frozen",
                 f"reward.feature_layers={layers}".replace("None", "null"))
    set_seed(cfg.train.seed)  # as run_reward does: the same initial head
    model, tokenizer = build_reward_model(cfg.model, feature_layers=cfg.reward.feature_layers)
    initial_head = model.head.weight.detach().clone()
    encoded, _ = encode_preference_records(tokenizer, read_preference_data(cfg.data).train, max_length=128)
    batch = collate_judgements([encoded.pairs[0], encoded.rankings[0], encoded.ratings[0]], tokenizer.pad_token_id)
    with torch.no_grad():
        plain = RewardMethod(RewardSettings()).loss(model.eval(), batch).loss_sum
        cached = RewardMethod(RewardSettings(), FrozenFeatures()).loss(model, batch).loss_sum
    torch.testing.assert_close(cached, plain)

    result = run_reward(cfg)
    trained, _ = load_reward_model(result.final_model_dir)
    before = model.backbone.state_dict()
    assert all(torch.equal(value, before[name]) for name, value in trained.backbone.state_dict().items())
    assert torch.equal(model.head.weight, initial_head) and not torch.equal(trained.head.weight, initial_head)
    assert read_reward_metadata(result.final_model_dir)["extra"]["backbone"] == "frozen"
    assert trained.feature_layers == (tuple(layers) if layers else None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0]
