"""Which items people judge next: chosen by how much a reward-model ensemble stands to learn.

A judgement teaches the reward model most where it is unsure of the order of two replies for
lack of data, not where the replies are simply close. An ensemble separates the two: its
members were trained on different bootstraps (`models/reward_ensemble.py`), so they agree on a
near-tie (each says ~50 %) and disagree where the data has not pinned the order down (one says
90 %, another 20 %). Houlsby et al. (2011, "Bayesian Active Learning for Classification and
Preference Learning") score an item by the mutual information between its label and the
model, BALD: the entropy of the members' mean prediction minus the mean of their entropies.
That is `uncertainty`, the epistemic part; `entropy` is the whole predictive entropy (it also
favours near-ties, which no number of labels resolves), kept to measure the difference.

A member's preference for reply a over reply b is Bradley–Terry's σ(r_a − r_b) on its raw
(unnormalised) scores, the units it was trained in. An item with K replies (a ranking) scores
the mean over its K(K−1)/2 pairs (what the loop uses); `best_pair` names the pair of an item
whose order would teach most.

Selection is greedy: the `count` highest-scoring items, ties in a seeded random order. Batch
redundancy (two near-identical items both chosen) is not corrected: sampling items in
proportion to their score (Kirsch et al. 2023, "Stochastic Batch Acquisition") measured worse
on HH-RLHF (mean held-out accuracy over the label curve 0.584 against 0.600 for the top;
benchmarks/feedback_efficiency.py, 10 seeds, AMD EPYC avx512_bf16).
Torch-free like the rest of the store: scores arrive as plain lists.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import TypeVar

__all__ = [
    "SELECTIONS", "best_pair", "item_score", "mutual_information", "pair_score", "predictive_entropy",
    "preference_probabilities", "select_items",
]

SELECTIONS = ("uniform", "uncertainty", "entropy")
Key = TypeVar("Key", bound=Hashable)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _binary_entropy(p: float) -> float:
    """In nats; 0 at p = 0 or 1."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def preference_probabilities(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """Each member's P(first ≻ second) = σ(r_m(first) − r_m(second)), from its raw scores of the two replies."""
    if len(first) != len(second) or not first:
        raise ValueError(f"need one score per member for both replies, got {len(first)} and {len(second)}")
    return [_sigmoid(a - b) for a, b in zip(first, second)]


def predictive_entropy(probabilities: Sequence[float]) -> float:
    """H(mean p): how unsure the ensemble as a whole is (0 to ln 2 nats)."""
    return _binary_entropy(sum(probabilities) / len(probabilities))


def mutual_information(probabilities: Sequence[float]) -> float:
    """BALD: H(mean p) − mean H(p_m), the part of the uncertainty that more labels remove (≥ 0;
    0 when the members agree, whatever they say)."""
    expected = sum(_binary_entropy(p) for p in probabilities) / len(probabilities)
    return max(0.0, predictive_entropy(probabilities) - expected)


_PAIR_SCORES = {"uncertainty": mutual_information, "entropy": predictive_entropy}


def pair_score(first: Sequence[float], second: Sequence[float], how: str) -> float:
    """How much judging the order of two replies would teach, by the selection `how`."""
    if how not in _PAIR_SCORES:
        raise ValueError(f"selection {how!r} scores no pairs; expected one of {', '.join(_PAIR_SCORES)}")
    return _PAIR_SCORES[how](preference_probabilities(first, second))


def item_score(candidates: Sequence[Sequence[float]], how: str) -> float:
    """An item's replies (each a list of its members' raw scores) -> the mean score of its pairs."""
    pairs = list(combinations(range(len(candidates)), 2))
    if not pairs:
        raise ValueError("an item needs two or more replies to score")
    return sum(pair_score(candidates[i], candidates[j], how) for i, j in pairs) / len(pairs)


def best_pair(candidates: Sequence[Sequence[float]], how: str) -> tuple[int, int, float]:
    """(i, j, score) of the pair of replies whose order would teach most (i < j; first such pair on a tie)."""
    scored = [(pair_score(candidates[i], candidates[j], how), -i, -j) for i, j in combinations(range(len(candidates)), 2)]
    if not scored:
        raise ValueError("an item needs two or more replies to score")
    score, i, j = max(scored)
    return -i, -j, score


def select_items(scores: Mapping[Key, float], count: int, how: str, seed: int) -> list[Key]:
    """`count` keys: a seeded random sample (`uniform`, which ignores the scores) or the highest
    scores, equal scores in a seeded random order. All keys when there are no more than `count`."""
    if how not in SELECTIONS:
        raise ValueError(f"unknown selection {how!r}; expected one of {', '.join(SELECTIONS)}")
    keys = list(scores)
    random.Random(seed).shuffle(keys)
    if how != "uniform":
        keys.sort(key=lambda key: -scores[key])  # stable: ties keep the shuffled order
    return keys[:count]
