"""The one interface every reward source offers, and the checks that guard it.

A reward source turns a batch of (prompt, response) pairs into one score per response, higher
meaning better: `source(prompts, responses) -> list[float]`. Learned reward models, offline
classifiers, user Python functions, HTTP reward servers and weighted mixes all look the same
to the RL step, the evaluation and the reward server.

Every source is called through `RewardSource.__call__`, which checks what comes back before the
RL step can use it: a source that raises, returns the wrong number of scores, or a NaN / inf
score stops the run with a `RewardSourceError` naming the source and, for a bad value, the index
and (the start of) the response it belongs to. A single NaN reward would otherwise spread
through the advantages into every weight of the policy, and the run would fail much later and
far from the cause.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from alignloop.data.schemas import Message
from alignloop.errors import UserError

__all__ = ["PromptInput", "RewardSource", "RewardSourceError", "check_scores", "shorten"]

# A prompt as text, or as a conversation of Message objects (or {"role", "content"} dicts).
PromptInput = str | Sequence[Message | Mapping[str, Any]]


class RewardSourceError(RuntimeError, UserError):
    """A reward source failed or returned scores that cannot be used as rewards."""


def shorten(text: str, limit: int = 80) -> str:
    """`text` quoted, cut to about `limit` characters, for error messages."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def check_scores(source_name: str, scores: Any, responses: Sequence[str]) -> list[float]:
    """`scores` as a list of finite floats, one per response, or a `RewardSourceError`."""
    try:
        values = list(scores)
    except TypeError:
        raise RewardSourceError(
            f"reward source {source_name}: expected a list of scores, got {type(scores).__name__}"
        ) from None
    if len(values) != len(responses):
        raise RewardSourceError(
            f"reward source {source_name}: returned {len(values)} scores for {len(responses)} responses"
        )
    result: list[float] = []
    for index, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
            shown = f"{value!r} (not a number)"
        else:
            shown = repr(number)
        if not math.isfinite(number):
            raise RewardSourceError(
                f"reward source {source_name}: score {shown} at index {index}, "
                f"for response {shorten(responses[index])}; scores must be finite numbers"
            )
        result.append(number)
    return result


class RewardSource(ABC):
    """Scores responses: `source(prompts, responses) -> list[float]`, one per response.

    Subclasses implement `score`; callers use the instance as a function, which checks the
    inputs and the scores (see the module docstring). `name` appears in errors and metrics.
    """

    name: str = "reward"

    @abstractmethod
    def score(self, prompts: list[PromptInput], responses: list[str]) -> Sequence[float]:
        """Raw scores for the batch; checked by `__call__`."""

    def __call__(self, prompts: Sequence[PromptInput], responses: Sequence[str]) -> list[float]:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"reward source {self.name}: got {len(prompts)} prompts but {len(responses)} responses")
        bad = next((i for i, r in enumerate(responses) if not isinstance(r, str)), None)
        if bad is not None:
            raise ValueError(f"reward source {self.name}: response {bad} is {type(responses[bad]).__name__}, not text")
        try:
            scores = self.score(prompts, responses)
        except RewardSourceError:
            raise
        except Exception as error:
            raise RewardSourceError(f"reward source {self.name} failed: {type(error).__name__}: {error}") from error
        return check_scores(self.name, scores, responses)

    def diagnostics(self) -> dict[str, list[float]]:
        """Per-reply figures of the last call besides the scores, by name (a reward-model
        ensemble's "disagreement"); none by default. The RL step logs and watches them."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
