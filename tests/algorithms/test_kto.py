"""KTO on a tiny model: the first step's loss is the hand value, the loss falls, the mismatched
pairs of the KL reference point are built right, and `alignloop kto` runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignloop.algorithms.kto import (
    FeedbackWithReference,
    KTOConfig,
    KTOMethod,
    KTOSettings,
    collate_kto,
    mismatched_examples,
    run_kto,
    weight_balance_warning,
)
from alignloop.config import load_config
from alignloop.data import IGNORE_INDEX, EncodedBinary, EncodedExample
from alignloop.engine import read_metrics
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "kto-tiny-cpu.yaml"


def first_lines(source: Path, target: Path, count: int) -> Path:
    target.write_text("".join(source.read_text().splitlines(keepends=True)[:count]))
    return target


def run(tiny_model_dir, out, train_file, *overrides):
    cfg = load_config(KTOConfig, RECIPE, [
        f"model.name={tiny_model_dir}", f"train.output_dir={out}", f"data.train=[{train_file}]", "data.eval=[]",
        "train.warmup_steps=0", *overrides,
    ])
    run_kto(cfg)
    return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def test_first_step_loss_is_half_because_policy_equals_reference_then_falls(tiny_model_dir, tmp_path):
    # Step 1: π = π_ref, so r = 0 and z0 = 0; each example's loss is λ (1 - σ(0)) = λ / 2.
    data = first_lines(ROOT / "recipes/data/calm-binary.jsonl", tmp_path / "binary.jsonl", 8)
    records = run(tiny_model_dir, tmp_path / "run", data, "train.batch_size=8", "train.max_steps=3")
    assert records[0]["train/loss"] == pytest.approx(0.5, abs=1e-6)
    assert records[0]["kl/reference_point"] == pytest.approx(0.0, abs=1e-6)
    assert records[0]["rewards/implicit"] == pytest.approx(0.0, abs=1e-5)
    assert records[-1]["train/loss"] < records[0]["train/loss"]  # the same 8 examples every step
    assert records[-1]["kl/reference_point"] > 0  # the policy has drifted: z0 is live
    for key in ("rewards/margins", "rewards/accuracies", "logps/policy"):
        assert key in records[-1]


def test_weighted_first_step_loss_on_pairs_split_in_two(tiny_model_dir, tmp_path):
    # Two pairs -> 2 desirable + 2 undesirable examples, all in step 1's batch:
    # (λ_D · ½ · n_D + λ_U · ½ · n_U) / (n_D + n_U) = (2·½·2 + 1·½·2) / 4 = 0.75.
    # With LoRA and an online reference, both reference passes switch the adapters off.
    data = first_lines(ROOT / "recipes/data/calm-pairs.jsonl", tmp_path / "pairs.jsonl", 2)
    records = run(tiny_model_dir, tmp_path / "run", data, "train.batch_size=4", "train.max_steps=1",
                  "kto.desirable_weight=2.0", "kto.undesirable_weight=1.0", "kto.reference=online",
                  "model.lora={r: 4, alpha: 8, dropout: 0.0}")
    assert records[0]["train/loss"] == pytest.approx((2 * 0.5 * 2 + 1 * 0.5 * 2) / 4, abs=1e-6)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())["data"]
    assert (info["train_desirable"], info["train_undesirable"]) == (2, 2)


def example(prompt: list[int], response: list[int]) -> EncodedExample:
    return EncodedExample(prompt + response, [IGNORE_INDEX] * len(prompt) + response)


def test_mismatched_pairs_take_the_next_examples_response_and_label_only_it():
    batch = [example([1, 2], [3, 4]), example([5], [6, 7, 8]), example([9, 10, 11], [12])]
    assert mismatched_examples(batch, max_length=16) == [
        example([1, 2], [6, 7, 8]), example([5], [12]), example([9, 10, 11], [3, 4]),
    ]
    # Too long for max_length: the borrowed response loses its tail, the prompt stays whole.
    assert mismatched_examples(batch, max_length=4) == [
        example([1, 2], [6, 7]), example([5], [12]), example([9, 10, 11], [3]),
    ]


def test_a_batch_of_one_has_no_mismatched_pair_and_its_reference_point_is_zero():
    item = FeedbackWithReference(EncodedBinary(example([1, 2], [3, 4]), True), reference_logps=-1.0)
    single = collate_kto([item], pad_token_id=0, max_length=16)
    assert "mismatched" not in single
    assert KTOMethod(KTOSettings()).reference_point(torch.nn.Linear(1, 1), single).item() == 0.0
    three = collate_kto([item] * 3, pad_token_id=0, max_length=16)
    assert three["mismatched"]["input_ids"].shape == (3, 4)


def test_weight_balance_warning_follows_the_papers_range():
    assert weight_balance_warning(100, 100, 1.0, 1.0) is None
    assert weight_balance_warning(100, 90, 1.2, 1.0) is None  # 1.33
    warning = weight_balance_warning(100, 100, 2.0, 1.0)
    assert "= 2, outside" in warning and "[1, 1.33]" in warning
    assert "desirable_weight in [0.5, 0.667]" in weight_balance_warning(200, 100, 1.0, 1.0)
    assert "needs both kinds" in weight_balance_warning(10, 0, 1.0, 1.0)


def test_cli_runs_the_recipe(tiny_model_dir, tmp_path):
    data = first_lines(ROOT / "recipes/data/calm-binary.jsonl", tmp_path / "binary.jsonl", 8)
    result = alignloop_in_process("kto", "--config", RECIPE, f"model.name={tiny_model_dir}", f"train.output_dir={tmp_path / 'run'}",
                                  f"data.train=[{data}]", "data.eval=[]", "train.max_steps=2")
    assert result.returncode == 0, result.stderr
    assert "done: 2 steps" in result.stdout
    assert (tmp_path / "run" / "final" / "config.json").is_file()
