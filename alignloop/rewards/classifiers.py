"""Offline text classifiers as reward sources: toxicity and sentiment of the RESPONSE.

Both models ship inside their PyPI packages, so scoring needs no download and works without
internet (checked by a test that forbids network connections while scoring):

- toxicity: `alt-profanity-check`, a linear SVM over TF-IDF features trained on Wikipedia
  talk-page comments (calibrated to a probability). It mostly reacts to profanity and insults,
  not to subtler harm; it is fast (tens of thousands of short texts a second on one core) and meant for demos, tests and as a
  simple gold scorer, not as a safety filter.
- sentiment: VADER (`vaderSentiment`), a rule-based lexicon scorer; its `compound` score lies in
  [-1, 1], from most negative to most positive.

The prompt is ignored: these judge what the policy wrote, not the exchange. (Scoring the prompt
too would make the reward depend on text the policy cannot change.)

The models are loaded on first use (scikit-learn and the lexicon take about a second), so
importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from alignloop.rewards.base import PromptInput, RewardSource

__all__ = ["ToxicityStyle", "toxicity_probability", "sentiment_compound", "ToxicityRewardSource", "SentimentRewardSource"]

# How a toxicity probability p becomes a reward: 1 - p, the probability that the text is clean
# (in [0, 1], the same orientation as other scores), or -p, a pure penalty (clean text scores 0).
ToxicityStyle = Literal["one_minus", "negated"]


@cache
def _sentiment_analyzer() -> Any:
    # lazy: an optional package, needed only by the sentiment source
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def toxicity_probability(texts: Sequence[str]) -> list[float]:
    """The probability, in [0, 1], that each text is toxic / profane (alt-profanity-check)."""
    if not texts:
        return []
    # lazy: an optional package that loads its shipped model when imported (seconds)
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(list(texts))]


def sentiment_compound(texts: Sequence[str]) -> list[float]:
    """VADER's compound sentiment of each text, in [-1, 1] (negative to positive)."""
    analyzer = _sentiment_analyzer()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


class ToxicityRewardSource(RewardSource):
    """Rewards clean responses: `1 - p` (style "one_minus", default) or `-p` ("negated"),
    where p is the response's toxicity probability. The two differ by a constant, which only
    matters where a reward's level does (a mix with other sources, PPO's value baseline)."""

    def __init__(self, style: ToxicityStyle = "one_minus", name: str = "toxicity") -> None:
        if style not in ("one_minus", "negated"):
            raise ValueError(f"toxicity style must be 'one_minus' or 'negated', got {style!r}")
        self.style = style
        self.name = name

    def score(self, prompts: list[PromptInput], responses: list[str]) -> list[float]:
        probabilities = toxicity_probability(responses)
        if self.style == "negated":
            return [-p for p in probabilities]
        return [1.0 - p for p in probabilities]


class SentimentRewardSource(RewardSource):
    """Rewards positive responses: the response's VADER compound score, in [-1, 1]."""

    def __init__(self, name: str = "sentiment") -> None:
        self.name = name

    def score(self, prompts: list[PromptInput], responses: list[str]) -> list[float]:
        return sentiment_compound(responses)
