"""The benchmark scripts keep up with the package: every name they import from alignloop exists
(most imports sit inside functions, so running one is the only other way to find out, after an
hour), and the RL over-optimisation benchmark's per-arm recipes are valid RLOO recipes."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def alignloop_imports(script: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every `from alignloop... import name` in the script, at any depth."""
    return [(node.module, alias.name, node.lineno)
            for node in ast.walk(ast.parse(script.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "alignloop"
            for alias in node.names]


def importable(module: str, name: str) -> bool:
    """Whether `from module import name` works: an attribute, or a submodule."""
    parent = importlib.import_module(module)
    return hasattr(parent, name) or (hasattr(parent, "__path__")
                                     and importlib.util.find_spec(f"{module}.{name}") is not None)


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_every_name_a_benchmark_imports_from_alignloop_exists(script):
    missing = [f"{script.name}:{line}: {module}.{name}" for module, name, line in alignloop_imports(script)
               if not importable(module, name)]
    assert not missing, missing


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arm", ["single", "mean", "min", "mean_minus_std"])
def test_each_arm_of_the_rl_overoptimisation_benchmark_is_a_valid_rloo_recipe(arm, tmp_path):
    from alignloop.algorithms.grpo import GRPOConfig
    from alignloop.loop.demo import demo_config

    benchmark = load_benchmark("overoptimisation")
    loop = demo_config([])
    models = {"single": "rm-single", "ensemble": "rm-ensemble", "watch": "rm-watch"}
    reward = benchmark.arm_reward(arm, models, benchmark.gold_scorer(loop), penalty=1.0)
    recipe = benchmark.arm_recipe(loop, reward, tmp_path / arm, 3, argparse.Namespace(kl_coef=0.02, steps=5))
    config = GRPOConfig.model_validate(recipe)

    assert (config.group.advantage, config.group.kl_coef, config.group.kl_stop) == ("rloo", 0.02, None)
    assert (config.train.max_steps, config.train.seed, config.train.output_dir) == (5, 3, str(tmp_path / arm))
    parts = {part["name"]: part for part in reward["sources"]}
    assert list(parts) == ["proxy", "watch", "gold"]
    assert parts["proxy"]["path"] == models["single" if arm == "single" else "ensemble"]
    assert parts["proxy"].get("aggregate") == (None if arm == "single" else arm)
    assert (parts["watch"]["weight"], parts["gold"]["weight"]) == (0.0, 0.0)
