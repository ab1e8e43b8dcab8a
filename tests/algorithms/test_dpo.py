"""DPO on a tiny model: the reference is right, each variant runs, metrics are reported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignloop.algorithms.dpo import DPOConfig, run_dpo
from alignloop.config import load_config
from alignloop.engine import read_metrics

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "dpo-tiny-cpu.yaml"


def run(tiny_model_dir, out, *overrides):
    cfg = load_config(DPOConfig, RECIPE, [f"model.name={tiny_model_dir}", f"train.output_dir={out}", *overrides])
    run_dpo(cfg)
    return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def test_first_step_loss_is_log_2_because_policy_equals_reference(tiny_model_dir, tmp_path):
    # Before any update π = π_ref, so every implicit reward is 0 and -log σ(0) = log 2.
    records = run(tiny_model_dir, tmp_path, "train.max_steps=3")
    assert records[0]["train/loss"] == pytest.approx(math.log(2.0), abs=1e-5)
    assert records[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert key in records[-1]


def test_online_reference_with_lora_matches_the_precomputed_one(tiny_model_dir, tmp_path):
    lora = "model.lora={r: 4, alpha: 8, dropout: 0.0}"
    cached = run(tiny_model_dir, tmp_path / "cached", lora, "train.max_steps=3")
    online = run(tiny_model_dir, tmp_path / "online", lora, "train.max_steps=3", "dpo.reference=online")
    assert [r["train/loss"] for r in online] == pytest.approx([r["train/loss"] for r in cached], abs=1e-5)


def test_online_reference_without_lora_uses_a_frozen_copy(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=2", "dpo.reference=online")
    assert records[0]["train/loss"] == pytest.approx(math.log(2.0), abs=1e-5)


@pytest.mark.parametrize("loss, first_loss", [
    ("ipo", (1 / (2 * 0.1)) ** 2),  # (h - 1/(2β))² at h = 0
    ("hinge", 1.0),  # max(0, 1 - β·0)
    ("robust", math.log(2.0)),  # [(1-ε) log 2 - ε log 2] / (1 - 2ε) = log 2
])
def test_variants_start_from_their_value_at_zero_margin(tiny_model_dir, tmp_path, loss, first_loss):
    extra = ["dpo.label_smoothing=0.1"] if loss == "robust" else []
    records = run(tiny_model_dir, tmp_path, "train.max_steps=2", f"dpo.loss={loss}", *extra)
    assert records[0]["train/loss"] == pytest.approx(first_loss, rel=1e-4)


def test_simpo_needs_no_reference_and_learns(tiny_model_dir, tmp_path):
    records = run(tiny_model_dir, tmp_path, "train.max_steps=4", "dpo.loss=simpo", "dpo.beta=2.0")
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["data"]["train_pairs"] == 120


@pytest.mark.parametrize("overrides, named", [
    (["dpo.loss=ipo", "dpo.label_smoothing=0.1"], "loss 'ipo' refuses label_smoothing = 0.1"),
    (["dpo.loss=hinge", "dpo.label_smoothing=0.2"], "loss 'hinge' refuses label_smoothing = 0.2"),
    (["dpo.loss=simpo", "dpo.label_smoothing=0.1"], "label_smoothing is not a setting of loss 'simpo'"),
    (["dpo.loss=sigmoid", "dpo.simpo_gamma=1.0"], "simpo_gamma is not a setting of loss 'sigmoid' (only of 'simpo')"),
])
def test_a_setting_the_variant_does_not_take_is_refused_when_the_recipe_is_read(overrides, named):
    from alignloop.config import ConfigError

    with pytest.raises(ConfigError, match="dpo") as caught:
        load_config(DPOConfig, RECIPE, overrides)
    assert named in str(caught.value)
    # the settings a variant does take still load
    assert load_config(DPOConfig, RECIPE, ["dpo.loss=robust", "dpo.label_smoothing=0.1"]).dpo.label_smoothing == 0.1
    assert load_config(DPOConfig, RECIPE, ["dpo.loss=simpo", "dpo.simpo_gamma=1.0"]).dpo.simpo_gamma == 1.0


def test_the_variants_a_recipe_may_name_are_the_keys_of_the_table():
    from alignloop.config import ConfigError
    from alignloop.losses import DPO_LOSSES

    with pytest.raises(ConfigError, match="dpo") as caught:
        load_config(DPOConfig, RECIPE, ["dpo.loss=sigmod"])
    assert all(repr(name) in str(caught.value) for name in DPO_LOSSES)
