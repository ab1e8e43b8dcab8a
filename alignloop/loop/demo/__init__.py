"""The detox demo: the loop recipe `detox.yaml` and its prompts, shipped inside the package so
that `alignloop demo` runs from any folder."""

from __future__ import annotations

from pathlib import Path

from alignloop.config import load_config
from alignloop.loop.config import LoopConfig

HERE = Path(__file__).parent
RECIPE = HERE / "detox.yaml"


def demo_config(overrides: list[str]) -> LoopConfig:
    """The demo's loop config; its prompt files resolve next to the recipe unless overridden."""
    config = load_config(LoopConfig, RECIPE, overrides)
    prompts = config.prompts.model_copy(update={
        key: str(HERE / path) for key, path in (("train", config.prompts.train), ("eval", config.prompts.eval))
        if not Path(path).is_absolute() and not Path(path).exists()
    })
    return config.model_copy(update={"prompts": prompts})
