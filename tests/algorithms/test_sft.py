"""SFT: the completion-only loss against hand-computed values, and whole runs on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from alignloop.algorithms.sft import CompletionOnlyNLL, SFTConfig, run_sft
from alignloop.config import load_config
from alignloop.engine import read_metrics

ROOT = Path(__file__).resolve().parents[2]


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, **_):
        return SimpleNamespace(logits=self.logits)


def test_completion_only_nll_matches_hand_computed_values():
    # Position 0 predicts label[1] = 1 from logits [0, 0]: -log(1/2).
    # Position 1 predicts label[2] = 0 from logits [ln 3, 0]: -log(3/4).
    # Position 2 predicts nothing (no next label); label[0] (the prompt) is masked.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    batch = {"input_ids": torch.tensor([[0, 1, 0]]), "labels": torch.tensor([[-100, 1, 0]])}
    method = CompletionOnlyNLL()
    out = method.loss(FixedLogits(logits), batch)
    assert method.count_items(batch) == 2
    assert out.loss_sum.item() == pytest.approx(math.log(2.0) + math.log(4.0 / 3.0), abs=1e-6)


def tiny_config(tiny_model_dir, out: Path, *overrides: str) -> SFTConfig:
    base = [f"model.name={tiny_model_dir}", f"train.output_dir={out}"]
    return load_config(SFTConfig, ROOT / "recipes" / "sft-tiny-cpu.yaml", base + list(overrides))


def test_packed_run_trains_on_fewer_rows_and_learns(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, "data.packing=true", "data.max_length=256",
                         "train.max_steps=12", "train.lr=3e-3")
    result = run_sft(config)
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert result.global_step == 12
    assert losses[-1] < losses[0]


def test_lora_run_saves_adapter_and_merged_model_and_evaluates(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir, tmp_path, "model.lora={r: 4, alpha: 8, dropout: 0.0}", "save_merged=true",
        f"data.eval={ROOT / 'recipes/data/calm-replies-eval.jsonl'}", "train.eval_every=3",
    )
    result = run_sft(config)
    assert (result.final_model_dir / "adapter_config.json").is_file()
    assert (result.final_model_dir / "merged" / "model.safetensors").is_file()
    card = (result.final_model_dir / "README.md").read_text()  # alignloop's card, not peft's empty stub
    assert "**SFT** with LoRA" in card and "## Metrics at the end of training" in card and "eval/loss" in card
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6] and all(math.isfinite(r["eval/loss"]) for r in evals)


def test_eval_fraction_holds_out_training_examples(tiny_model_dir, tmp_path):
    result = run_sft(tiny_config(tiny_model_dir, tmp_path, "data.eval_fraction=0.2", "train.max_steps=2"))
    import json

    data = json.loads((tmp_path / "run_info.json").read_text())["data"]
    assert (data["train_examples"], data["eval_examples"]) == (96, 24)
    assert "eval/loss" in result.final_metrics


@pytest.mark.slow
def test_a_few_sft_steps_on_the_real_built_in_model(tmp_path, with_prepared_builtin):
    config = load_config(SFTConfig, ROOT / "recipes" / "sft-smollm2.yaml", [
        f"train.output_dir={tmp_path}", "train.max_steps=3", "train.batch_size=2", "data.max_length=128",
        "train.eval_every=null", "data.eval=null", "train.lr=1e-3", "train.warmup_ratio=0", "save_merged=false",
    ])
    result = run_sft(config)
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    assert (result.final_model_dir / "adapter_model.safetensors").is_file()
