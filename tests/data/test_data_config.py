"""The `data:` config section and reading the train / eval records it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignloop.config import ConfigError, Section, load_config
from alignloop.data import DataConfig, SFTExample, read_train_and_eval


class Recipe(Section):
    data: DataConfig


def write_sft(path: Path, count: int) -> Path:
    path.write_text("\n".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) for i in range(count)))
    return path


def test_defaults_and_one_line_of_help_per_field():
    config = DataConfig(train="train.jsonl")
    assert (config.train, config.eval, config.format, config.max_length) == (Path("train.jsonl"), None, "auto", 512)
    assert (config.overlong, config.packing, config.use_chat_template) == ("truncate", False, True)
    assert config.eval_fraction == 0.0
    for name, field in DataConfig.model_fields.items():
        assert field.description and "\n" not in field.description, name


def test_recipe_errors_name_the_key(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  train: t.jsonl\n  max_lenght: 128\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data.max_lenght' \(did you mean 'max_length'\?\)"):
        load_config(Recipe, recipe)
    with pytest.raises(ConfigError, match="missing required key 'data.train'"):
        load_config(Recipe, overrides=["data.max_length=128"])
    with pytest.raises(ConfigError, match="data.eval_fraction"):
        load_config(Recipe, overrides=["data.train=t.jsonl", "data.eval_fraction=0.6"])
    with pytest.raises(ConfigError, match="data.overlong"):
        load_config(Recipe, overrides=["data.train=t.jsonl", "data.overlong=cut"])
    with pytest.raises(ConfigError, match="either eval .* or eval_fraction"):
        load_config(Recipe, overrides=["data.train=t.jsonl", "data.eval=e.jsonl", "data.eval_fraction=0.1"])


def test_eval_fraction_holds_out_evenly_spread_records(tmp_path):
    config = DataConfig(train=write_sft(tmp_path / "train.jsonl", 10), eval_fraction=0.2)
    train, held_out = read_train_and_eval(config, SFTExample)
    assert [r.prompt for r in held_out] == ["q4", "q9"]
    assert len(train) == 8


def test_eval_file_or_nothing(tmp_path):
    train_path = write_sft(tmp_path / "train.jsonl", 3)
    config = DataConfig(train=train_path, eval=write_sft(tmp_path / "eval.jsonl", 2))
    train, evaluation = read_train_and_eval(config, "sft")
    assert (len(train), [r.prompt for r in evaluation]) == (3, ["q0", "q1"])
    assert read_train_and_eval(DataConfig(train=train_path), "sft")[1] == []
