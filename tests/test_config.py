"""Recipes and overrides into typed configs, and the errors a user sees for bad keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alignloop.config import ConfigError, apply_overrides, config_to_yaml, field_help, load_config
from alignloop.engine import TrainConfig


def test_overrides_set_nested_keys_with_yaml_values():
    tree = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=1e-4", "model.lora={r: 4}", "data.packing=true"])
    assert tree == {"train": {"lr": 1e-4}, "model": {"lora": {"r": 4}}, "data": {"packing": True}}


def test_override_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.lr"])


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("batch_sise: 4\n")
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, recipe)
    message = str(error.value)
    assert "r.yaml: unknown key 'batch_sise' (did you mean 'batch_size'?)" in message
    assert "valid keys here:" in message and "grad_accum" in message


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"overrides: key 'batch_size'.*got 'four'"):
        load_config(TrainConfig, None, ["batch_size=four"])


def test_missing_recipe_and_bad_yaml_are_named(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(TrainConfig, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(TrainConfig, bad)


def test_yaml_no_means_no_mixed_precision():
    assert load_config(TrainConfig, None, ["mixed_precision=no"]).mixed_precision == "no"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(TrainConfig, None, ["lr=0.5", "report_to=[jsonl]"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(TrainConfig, path) == config


def test_every_field_has_one_line_of_help():
    rows = field_help(TrainConfig)
    assert {key for key, _, _ in rows} >= {"lr", "mixed_precision", "save_every"}
    assert all(text and "\n" not in text for _, _, text in rows)


def test_unknown_key_inside_a_list_of_sections_lists_that_sections_keys():
    from alignloop.rewards.config import RewardSourceConfig

    tree = {"type": "mix", "sources": [{"type": "toxicity", "wieght": 2.0}]}
    from alignloop.config import validate_config

    with pytest.raises(ConfigError) as error:
        validate_config(RewardSourceConfig, tree, "recipe.yaml")
    assert "unknown key 'sources.0.wieght' (did you mean 'weight'?)" in str(error.value)
    assert "valid keys here: " in str(error.value) and "function" in str(error.value)


def test_a_trl_argument_name_is_answered_with_the_alignloop_key_it_means():
    from alignloop.algorithms.dpo import DPOConfig
    from alignloop.algorithms.grpo import GRPOConfig
    from alignloop.trl_names import TRL_KEYS

    with pytest.raises(ConfigError) as caught:
        load_config(DPOConfig, None, ["learning_rate=1e-4", "beta=0.1", "train.per_device_train_batch_size=8"])
    message = str(caught.value)
    assert "unknown key 'learning_rate' (TRL's name; in alignloop: train.lr)" in message
    assert "unknown key 'beta' (TRL's name; in alignloop: dpo.beta)" in message
    assert "unknown key 'train.per_device_train_batch_size' (TRL's name; in alignloop: train.batch_size)" in message
    # one TRL name, the key of the method at hand
    with pytest.raises(ConfigError, match=r"unknown key 'beta' \(TRL's name; in alignloop: group\.kl_coef\)"):
        load_config(GRPOConfig, None, ["beta=0.1"])
    # every alignloop key in the table exists in some method's config
    from alignloop.algorithms.ppo import PPOConfig
    from alignloop.algorithms.sft import SFTConfig
    from alignloop.config import _key_exists

    configs = (DPOConfig, GRPOConfig, PPOConfig, SFTConfig)
    missing = [key for keys in TRL_KEYS.values() for key in keys if not any(_key_exists(c, key) for c in configs)]
    assert missing == []
    # the README's table is the map itself
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (`.+`) \|$", readme, flags=re.MULTILINE))
    assert rows == {trl: " / ".join(f"`{key}`" for key in keys) for trl, keys in TRL_KEYS.items()}
