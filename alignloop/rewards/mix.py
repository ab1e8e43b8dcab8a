"""A weighted sum of several reward sources: `reward = sum_i weight_i * source_i(prompts, responses)`.

The usual use is a learned reward plus guard rails (`1.0 * reward_model + 0.5 * toxicity`).
Weights are plain multipliers, not normalised to sum to one, so that a recipe's numbers mean
exactly what they say; a negative weight turns a source into a penalty.

Each part is scored as a whole batch, in order, and checked on its own (so an error names the
part, not just the mix). `diagnostics` gives the unweighted score of every part of the last
batch, and the parts' own figures (a reward-model ensemble's disagreement), which the RL step logs
as `reward/<name>` to show which part of the reward the policy is moving. A part of weight 0 is
therefore a monitor: a gold scorer logged at every step that the policy is not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from alignloop.rewards.base import PromptInput, RewardSource

__all__ = ["MixedRewardSource"]


class MixedRewardSource(RewardSource):
    """`sum(weight * source(prompts, responses))` over `(weight, source)` parts."""

    def __init__(self, parts: Sequence[tuple[float, RewardSource]], name: str = "mix") -> None:
        if not parts:
            raise ValueError("a reward mix needs at least one source")
        for weight, source in parts:
            if not math.isfinite(weight):
                raise ValueError(f"reward mix: weight of {source.name} must be a finite number, got {weight}")
        self.parts = list(parts)
        self.name = name
        self.part_names = _unique([source.name for _, source in self.parts])
        self._last_parts: dict[str, list[float]] = {}

    def score_parts(self, prompts: list[PromptInput], responses: list[str]) -> tuple[list[float], dict[str, list[float]]]:
        """(weighted total, {part name: unweighted scores}) for the batch."""
        parts = {name: source(prompts, responses) for name, (_, source) in zip(self.part_names, self.parts)}
        total = [0.0] * len(responses)
        for (weight, _), scores in zip(self.parts, parts.values()):
            total = [t + weight * s for t, s in zip(total, scores)]
        self._last_parts = parts
        return total, parts

    def score(self, prompts: list[PromptInput], responses: list[str]) -> list[float]:
        return self.score_parts(prompts, responses)[0]

    def diagnostics(self) -> dict[str, list[float]]:
        """The last batch's unweighted score of every part by its name, then the parts' own
        figures; where two parts report one name, a monitor (weight 0) wins over a part that is
        trained on, then the first. So the over-optimisation alarm, which reads `disagreement`,
        watches a monitoring ensemble when the mix has one: members the policy does not climb.
        A `min` or `mean_minus_std` reward drives its own members' spread down on the replies it
        favours, which blinds an alarm that watches them."""
        figures = dict(self._last_parts)
        for _, source in sorted(self.parts, key=lambda part: part[0] != 0):
            for name, values in source.diagnostics().items():
                figures.setdefault(name, values)
        return figures


def _unique(names: list[str]) -> list[str]:
    """Names made unique with a `#2`, `#3` suffix, so that two parts never share a metric."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result
