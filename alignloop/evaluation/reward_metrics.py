"""How well a reward model's scores agree with human judgements.

Pure functions over plain lists of floats, so they are easy to check by hand:

* pairwise accuracy — the fraction of pairs where the chosen response scores higher;
* calibration — the Bradley–Terry model says P(chosen ≻ rejected) = σ(r_c − r_r); expected
  calibration error (Guo et al. 2017, eq. 3) compares those probabilities with what happened.
  Each pair enters in both orders, (p, 1) and (1 − p, 0), because a set where the first item
  always wins would otherwise measure only how close p is to 1;
* Kendall's tau-b between predicted scores and human ranks (Kendall 1945; tau-b corrects for
  ties on either side), averaged over rankings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    if not chosen:
        return float("nan")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def expected_calibration_error(chosen: Sequence[float], rejected: Sequence[float], bins: int = 10) -> float:
    """ECE of P(chosen ≻ rejected) = σ(r_c − r_r), each pair counted in both orders."""
    if not chosen:
        return float("nan")
    points = []
    for c, r in zip(chosen, rejected):
        p = sigmoid(c - r)
        points += [(p, 1.0), (1.0 - p, 0.0)]
    error = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            confidence = sum(p for p, _ in inside) / len(inside)
            frequency = sum(y for _, y in inside) / len(inside)
            error += len(inside) / len(points) * abs(confidence - frequency)
    return error


def kendall_tau_b(scores: Sequence[float], ranks: Sequence[int]) -> float:
    """Agreement of scores (higher = better) with ranks (1 = best); nan when either side is all ties."""
    concordant = discordant = tied_scores = tied_ranks = 0
    n = len(scores)
    for i in range(n):
        for j in range(i + 1, n):
            score_order = (scores[i] > scores[j]) - (scores[i] < scores[j])
            rank_order = (ranks[j] > ranks[i]) - (ranks[j] < ranks[i])  # rank 1 beats rank 2
            if score_order == 0 and rank_order == 0:
                continue
            if score_order == 0:
                tied_scores += 1
            elif rank_order == 0:
                tied_ranks += 1
            elif score_order == rank_order:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_scores) * (concordant + discordant + tied_ranks))
    return (concordant - discordant) / denominator if denominator else float("nan")


def mean_ignoring_nan(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")
