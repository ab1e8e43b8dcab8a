"""The recipes a loop hands to its stages: the loop's own sections (`feedback.annotators`,
`reward_model`, `rl.recipe`, `eval`) merged with what the loop decides itself (the model, the
data, the reward model, the output folder).

The stages build their recipes here, and `stage_recipe_errors` builds the same recipes when the
loop config is read, with stand-ins for what earlier stages will make, so a wrong key in any
section is refused before round 1, by the class that would have read it hours later.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from alignloop.algorithms.reward import RewardConfig
from alignloop.config import nested_recipe_errors
from alignloop.evaluation.policy_eval import EvalConfig
from alignloop.loop.annotators import AnnotatorsConfig

if TYPE_CHECKING:
    from pydantic_core import InitErrorDetails

    from alignloop.loop.config import LoopConfig


def stage_recipe(base: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """A stage's recipe with the loop's own choices filled in; sections that both give (`train`,
    `group`) are merged key by key, the loop's keys winning."""
    recipe = dict(base)
    for key, value in fixed.items():
        both_sections = isinstance(value, dict) and isinstance(base.get(key), dict)
        recipe[key] = {**base[key], **value} if both_sections else value
    return recipe


def annotators_recipe(cfg: LoopConfig, number: int) -> dict[str, Any]:
    """The scripted annotators' settings of round `number` (seeded by the round)."""
    return {**cfg.feedback.annotators, "seed": cfg.seed + number}


def reward_model_recipe(cfg: LoopConfig, exports: list[str], out: Path, seed: int) -> dict[str, Any]:
    """`alignloop rm train`'s recipe for a round: the loop's reward_model section on `exports`."""
    model = {"name": cfg.model.name, **cfg.reward_model.get("model", {})}
    data = {"train": exports, "eval_every_nth": 5, **cfg.reward_model.get("data", {})}
    return stage_recipe(cfg.reward_model, model=model, data=data, train={"output_dir": str(out), "seed": seed})


def rl_recipe(cfg: LoopConfig, adapter: str | None, exports: list[str], reward_model: str | None, out: Path,
              seed: int) -> dict[str, Any]:
    """The RL method's recipe for a round: the loop's rl section, the policy continuing from
    `adapter` (None: the starting model), DPO on `exports`, the others against `reward_model`."""
    model = cfg.model.model_dump()
    if adapter:
        model.update(adapter=adapter, lora=None)
    method = cfg.rl.method
    if method == "dpo":
        fixed = {"model": model, "data": {"train": exports, **cfg.rl.recipe.get("data", {})}}
    else:
        data = {"train": cfg.prompts.train, "max_prompt_length": cfg.prompts.max_prompt_length,
                "split": cfg.prompts.split, "eval_split": cfg.prompts.eval_split, "name": cfg.prompts.name,
                **cfg.rl.recipe.get("data", {})}
        if cfg.rl.recipe.get("train", {}).get("eval_every"):
            # Held-out curves during RL only when asked: the evaluate stage measures the final
            # policy on the same prompts anyway (the demo: 60 s saved of a duplicate evaluation).
            data.setdefault("eval", cfg.prompts.eval)
        fixed = {"model": model, "data": data, "reward": {"type": "reward_model", "path": reward_model}}
    settings = "ppo" if method == "ppo" else "group"
    if method == "rloo":
        fixed["group"] = {"advantage": "rloo"}
    if cfg.rl.stop_on_overoptimisation:
        fixed[settings] = {**fixed.get(settings, {}), "stop_on_overoptimisation": True}
    return stage_recipe(cfg.rl.recipe, **fixed, train={"output_dir": str(out), "seed": seed})


def eval_recipe(cfg: LoopConfig, reward_model: str, adapter: str, output: Path) -> dict[str, Any]:
    """`alignloop eval`'s recipe for a round: the round's policy and reward model on the held-out prompts."""
    sources = [{"type": "reward_model", "path": reward_model, "name": "reward_model"},
               *cfg.eval.get("sources", [{"type": "toxicity"}])]
    return {**cfg.eval, "sources": sources, "prompts": cfg.prompts.eval, "split": cfg.prompts.eval_split,
            "name": cfg.prompts.name, "policy": {"name": cfg.model.name, "adapter": adapter},
            "output": str(output), "seed": cfg.seed}


# Module, config class and run function of each RL method (rloo: GRPO's, `rl_recipe` sets its baseline).
RL_METHODS = {
    "ppo": ("alignloop.algorithms.ppo", "PPOConfig", "run_ppo"),
    "grpo": ("alignloop.algorithms.grpo", "GRPOConfig", "run_grpo"),
    "rloo": ("alignloop.algorithms.grpo", "GRPOConfig", "run_grpo"),
    "dpo": ("alignloop.algorithms.dpo", "DPOConfig", "run_dpo"),
}


def rl_method(method: str) -> tuple[type, Callable[..., Any]]:
    """The config class and run function of an RL method, imported when asked for (torch)."""
    module_name, config_class, run_function = RL_METHODS[method]
    module = importlib.import_module(module_name)
    return getattr(module, config_class), getattr(module, run_function)


def stage_recipe_errors(cfg: LoopConfig) -> list[InitErrorDetails]:
    """Every stage recipe of rounds 1 and 2 (round 2 continues an adapter) validated by its
    stage's config class, with stand-in paths for what earlier stages make; the errors name
    the loop's keys in full (`rl.recipe.group.kl_coef`)."""
    errors: list[InitErrorDetails] = []
    seen: set[tuple] = set()  # round 2 repeats round 1's errors
    for number in range(1, min(cfg.rounds, 2) + 1):
        folder = Path(cfg.output_dir) / "rounds" / f"round-{number}"
        exports = [str(folder / "feedback" / "preferences.jsonl")]
        reward_model, adapter = str(folder / "rm" / "final"), str(folder / "rl" / "final")
        previous = str(Path(cfg.output_dir) / "rounds" / f"round-{number - 1}" / "rl" / "final") if number > 1 else None
        for key, config_class, recipe in (
            ("feedback.annotators.", AnnotatorsConfig, annotators_recipe(cfg, number)),
            ("reward_model.", RewardConfig, reward_model_recipe(cfg, exports, folder / "rm", cfg.seed)),
            ("rl.recipe.", rl_method(cfg.rl.method)[0],
             rl_recipe(cfg, previous, exports, reward_model, folder / "rl", cfg.seed + number)),
            ("eval.", EvalConfig, eval_recipe(cfg, reward_model, adapter, folder / "eval.json")),
        ):
            for error in nested_recipe_errors(config_class, recipe, key):
                if error["loc"] not in seen:
                    seen.add(error["loc"])
                    errors.append(error)
    return errors
