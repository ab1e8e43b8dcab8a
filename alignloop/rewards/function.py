"""A user's Python function as a reward source, named `module:function` in a recipe.

The function receives the whole batch, `fn(prompts, responses) -> list[float]`, so that it can
vectorise (run a model once over the batch) rather than be called once per response. The module
is imported as Python imports any module: it must be importable from `sys.path` (an installed
package, or a file in the working directory). `module:Class.attribute` reaches nested
attributes.

Every way the string can be wrong (no colon, a module that is missing or fails to import, a
missing attribute, something that is not callable) is reported with the string itself, since
that is what the user has to fix in the recipe.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from alignloop.rewards.base import PromptInput, RewardSource, RewardSourceError

__all__ = ["load_function", "FunctionRewardSource"]


def load_function(spec: str) -> Callable[..., Any]:
    """The callable that `"module:function"` (or `"module:Object.attribute"`) names."""
    module_name, sep, attribute_path = spec.partition(":")
    if not sep or not module_name.strip() or not attribute_path.strip():
        raise RewardSourceError(f"reward function {spec!r}: expected 'module:function', e.g. 'my_rewards:length_bonus'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise RewardSourceError(
                f"reward function {spec!r}: no module named {error.name!r} (is it on sys.path / installed?)"
            ) from error
        raise RewardSourceError(f"reward function {spec!r}: importing {module_name!r} failed: {error}") from error
    except Exception as error:
        raise RewardSourceError(
            f"reward function {spec!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    walked = module_name
    for part in attribute_path.split("."):
        if not hasattr(target, part):
            raise RewardSourceError(f"reward function {spec!r}: {walked!r} has no attribute {part!r}")
        target = getattr(target, part)
        walked = f"{walked}.{part}"
    if not callable(target):
        raise RewardSourceError(f"reward function {spec!r}: {walked!r} is a {type(target).__name__}, not callable")
    return target


class FunctionRewardSource(RewardSource):
    """Calls `fn(prompts, responses)` once per batch; `fn` may be a callable or a
    `"module:function"` string."""

    def __init__(self, fn: Callable[[list[PromptInput], list[str]], Sequence[float]] | str, name: str | None = None):
        if isinstance(fn, str):
            self.name = name or fn
            fn = load_function(fn)
        else:
            self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.fn = fn

    def score(self, prompts: list[PromptInput], responses: list[str]) -> Sequence[float]:
        return self.fn(prompts, responses)
