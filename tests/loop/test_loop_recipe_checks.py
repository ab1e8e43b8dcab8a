"""A loop recipe is checked whole when it is read: a wrong key in any stage's section
(`feedback.annotators`, `reward_model`, `rl.recipe`, `eval`) is refused before round 1, in one
line naming the loop's full dotted key, through the same merge the stages make."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alignloop.config import ConfigError, load_config
from alignloop.loop.config import LoopConfig
from alignloop.loop.demo import demo_config
from cli_in_process import alignloop_in_process

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "loop-tiny-cpu.yaml"


def test_the_shipped_loop_recipes_are_valid_whole():
    assert load_config(LoopConfig, RECIPE).rl.recipe["ppo"]["epochs"] == 1
    assert demo_config([]).rl.method == "rloo"
    for method in ("grpo", "rloo", "dpo"):  # the tiny recipe's ppo: section is not for them
        recipe = "rl.recipe={train: {max_steps: 1}}" if method == "dpo" else "rl.recipe={group: {group_size: 2}}"
        assert load_config(LoopConfig, RECIPE, [f"rl.method={method}", recipe]).rl.method == method


@pytest.mark.parametrize("typo, named", [
    ("feedback.annotators.nois=0.1", "unknown key 'feedback.annotators.nois' (did you mean 'noise'?)"),
    ("reward_model.train.lrr=0.1", "unknown key 'reward_model.train.lrr' (did you mean 'lr'?)"),
    ("reward_model.reward.ensembel=3", "unknown key 'reward_model.reward.ensembel' (did you mean 'ensemble'?)"),
    ("rl.recipe.ppo.kl_coeff=0.1", "unknown key 'rl.recipe.ppo.kl_coeff' (did you mean 'kl_coef'?)"),
    ("rl.recipe.sampling.temperature=-1", "key 'rl.recipe.sampling.temperature': Input should be greater than"),
    ("eval.sample_per_prompt=3", "unknown key 'eval.sample_per_prompt' (did you mean 'samples_per_prompt'?)"),
])
def test_a_typo_in_any_stage_section_is_refused_before_any_stage_runs(typo, named, tmp_path):
    load_config(LoopConfig, RECIPE)  # the stages' config classes imported once, as a fresh process would
    out = tmp_path / "loop"
    started = time.perf_counter()
    done = alignloop_in_process("loop", "--config", RECIPE, f"output_dir={out}", typo)
    seconds = time.perf_counter() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert named in done.stderr and str(RECIPE) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one error, one line
    assert not out.exists()  # no stage ran: no loop folder, no database, no state
    assert seconds < 2, f"refused after {seconds:.1f} s"


def test_rl_recipe_keys_are_checked_against_the_method_the_loop_runs():
    # `group:` belongs to GRPO / RLOO: under PPO it is a typo, refused with PPO's keys listed.
    with pytest.raises(ConfigError, match="unknown key 'rl.recipe.group'; valid keys here: data, model, ppo"):
        load_config(LoopConfig, RECIPE, ["rl.recipe.group={group_size: 2}"])
