"""A learned reward model (trained by `alignloop rm train`) as a reward source.

A thin adapter over `RewardScorer`, which owns encoding (the chat template the model was
trained on), length-sorted batching and the stored normalisation. torch and transformers are
imported only when a model is loaded, so that the rest of `alignloop.rewards` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignloop.rewards.base import PromptInput, RewardSource

__all__ = ["LearnedRewardSource"]


class LearnedRewardSource(RewardSource):
    """Scores with a `RewardScorer` (or any `scorer(prompts, responses) -> list[float]`)."""

    def __init__(self, scorer: Callable[[list[PromptInput], list[str]], Sequence[float]], name: str = "reward_model"):
        self.scorer = scorer
        self.name = name

    @classmethod
    def load(cls, path: str | Path, *, name: str = "reward_model", **options: Any) -> LearnedRewardSource:
        """The reward model saved at `path`; `options` go to `RewardScorer.load` (dtype,
        base_model, batch_size, normalize, max_length, ...)."""
        # lazy: torch loads when a reward model is loaded, not when the web server or annotators import this
        from alignloop.models.reward_scoring import RewardScorer

        return cls(RewardScorer.load(str(path), **options), name=name)

    def score(self, prompts: list[PromptInput], responses: list[str]) -> Sequence[float]:
        return self.scorer(prompts, responses)

    def diagnostics(self) -> dict[str, list[float]]:
        """An ensemble's disagreement on each reply of the last call (see `RewardSource.diagnostics`)."""
        model = getattr(self.scorer, "model", None)
        if getattr(model, "members", 1) == 1:
            return {}
        return {"disagreement": list(self.scorer.last_disagreement)}
