"""Evaluator reliability learned from the judgements themselves, without gold items.

Every vote is on the order of two candidates of one item: a pairwise answer (a tie or "both
bad" says nothing about the order and is left out), or two candidates that a ranking put at
different ranks. The model is the one-coin Dawid–Skene model (Dawid & Skene 1979): each pair
has one true order, and evaluator e reports it with probability η_e, whatever the pair.
Expectation–maximisation alternates the posterior of each pair's order given the votes (E) and
each evaluator's η as their expected share of correct votes, smoothed by a Beta(a, a) prior (M).
What is learned is agreement with the consensus the model itself infers, weighted by whom it
finds reliable; no answer needs to be known in advance.

η tells evaluators apart: well above 0.5, reliable; near 0.5, random (noisy); well below 0.5,
consistently opposite (malicious: they know the better reply and pick the other). In a binary
decision a vote's Bayes weight is logit(η) (Nitzan & Paroush 1982), negative for an evaluator
below chance: their vote, inverted, is evidence. The export's `aggregation: model` reads votes
so (`vote_weights(signed=True)`, inverting the ballots of the opposite); on HH-RLHF pairs with
30 % malicious annotators that trains a reward model closer to the clean-label one than
dropping them (benchmarks/feedback_efficiency.py).

Only votes on pairs that someone else voted on too teach anything about a voter (alone on a
pair, an evaluator agrees with the consensus they make), so EM runs on those; an evaluator
without any keeps the starting belief and the verdict "unknown".

Two simplifications, said here because they bias η slightly upwards for rankers: the pairs of
one ranking are treated as independent votes, and candidates are not given latent scores (Crowd-BT,
Chen et al. 2013, adds them). The likelihood is unchanged when every η becomes 1 − η and every
order flips, so EM's answer has an equally likely mirror; of the two, the one in which most
evaluators are better than chance is kept (the assumption of a majority vote too). Starting
from η = 0.75 is not enough on its own: 4 consistent malicious evaluators among 10, with the 6
honest ones answering at random 20 % of the time, pull EM into the mirror on some seeds
(benchmarks/annotator_reliability.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy.orm import Session

from alignloop.feedback.quality import (
    TIE_CHOICES,
    JudgementFacts,
    dense_ranks,
    load_judgement_facts,
    preferred_candidate,
)

__all__ = ["Reliability", "Vote", "campaign_reliability", "fit_reliability", "order_posteriors", "votes_from_facts"]

Pair = tuple[int, int, int]  # (item id, lower candidate id, higher candidate id)


@dataclass(frozen=True)
class Vote:
    """One evaluator's word on one pair: is the lower-id candidate the better one?"""

    evaluator: int
    pair: Pair
    first_better: bool


def votes_from_facts(facts: Iterable[JudgementFacts]) -> list[Vote]:
    """The order votes of pairwise and ranking judgements (others, ties and equal ranks: none)."""
    votes = []
    for fact in facts:
        if fact.task_type == "pairwise":
            winner = preferred_candidate(fact)
            if winner in TIE_CHOICES:
                continue
            low, high = sorted(fact.shown_order[:2])
            votes.append(Vote(fact.evaluator_id, (fact.item_id, low, high), winner == low))
        elif fact.task_type == "ranking":
            ranks = dense_ranks(fact.answer["ranks"])
            for low, high in combinations(sorted(ranks), 2):
                if ranks[low] != ranks[high]:
                    votes.append(Vote(fact.evaluator_id, (fact.item_id, low, high), ranks[low] < ranks[high]))
    return votes


def _logit(p: float, clip: float = 1e-3) -> float:
    p = min(max(p, clip), 1 - clip)
    return math.log(p / (1 - p))


def order_posteriors(votes: Sequence[Vote], reliability: dict[int, float]) -> dict[Pair, float]:
    """E-step: P(the lower-id candidate is better | votes) per pair, under a flat prior. Each
    vote adds ±logit(η) of its evaluator to the pair's log-odds."""
    log_odds: dict[Pair, float] = defaultdict(float)
    for vote in votes:
        weight = _logit(reliability[vote.evaluator])
        log_odds[vote.pair] += weight if vote.first_better else -weight
    return {pair: 1 / (1 + math.exp(-min(max(value, -50.0), 50.0))) for pair, value in log_odds.items()}


def _update_reliability(votes: Sequence[Vote], posteriors: dict[Pair, float], prior: float) -> dict[int, float]:
    """M-step: each evaluator's expected share of correct votes, with `prior` pseudo-votes at 0.5."""
    right: dict[int, float] = defaultdict(float)
    cast: dict[int, int] = defaultdict(int)
    for vote in votes:
        p = posteriors[vote.pair]
        right[vote.evaluator] += p if vote.first_better else 1 - p
        cast[vote.evaluator] += 1
    return {e: (right[e] + prior / 2) / (cast[e] + prior) for e in cast}


@dataclass(frozen=True)
class Reliability:
    """The fitted model: η and vote count per evaluator, each pair's posterior, EM's iterations."""

    reliability: dict[int, float]
    votes: dict[int, int]  # votes on pairs that another evaluator voted on too
    posteriors: dict[Pair, float]
    iterations: int
    prior: float

    def spread(self, evaluator: int) -> float:
        """η's standard deviation under its Beta posterior (few votes: wide)."""
        eta, n = self.reliability[evaluator], self.votes[evaluator] + self.prior
        return math.sqrt(eta * (1 - eta) / (n + 1))

    def verdict(self, evaluator: int) -> str:
        """"reliable" / "malicious" when η is two spreads above / below chance, else "noisy";
        "unknown" for an evaluator who shared no pair with another."""
        if self.votes[evaluator] == 0:
            return "unknown"
        eta, spread = self.reliability[evaluator], self.spread(evaluator)
        if eta - 2 * spread > 0.5:
            return "reliable"
        if eta + 2 * spread < 0.5:
            return "malicious"
        return "noisy"

    def vote_weights(self, signed: bool = False) -> dict[int, float]:
        """logit(η) per evaluator, floored at 0 (a malicious or random evaluator's votes count for
        nothing), or `signed`: negative for the consistently opposite, whose votes, read the other
        way round, say as much as a reliable evaluator's (the E-step reads them so)."""
        return {e: _logit(eta) if signed else max(0.0, _logit(eta)) for e, eta in self.reliability.items()}


def fit_reliability(votes: Sequence[Vote], prior: float = 2.0, start: float = 0.75, iterations: int = 200,
                    tolerance: float = 1e-6) -> Reliability:
    """EM from every evaluator at η = `start` until no η moves by more than `tolerance`, on the
    votes of pairs with two or more voters; the posteriors are of every pair."""
    voters: dict[Pair, set[int]] = defaultdict(set)
    for vote in votes:
        voters[vote.pair].add(vote.evaluator)
    shared = [vote for vote in votes if len(voters[vote.pair]) > 1]
    reliability = dict.fromkeys({vote.evaluator for vote in votes}, start)
    done = 0
    for done in range(1, iterations + 1):
        updated = {**reliability, **_update_reliability(shared, order_posteriors(shared, reliability), prior)}
        moved = max((abs(updated[e] - reliability[e]) for e in reliability), default=0.0)
        reliability = updated
        if moved < tolerance:
            break
    counts = {evaluator: 0 for evaluator in reliability}
    for vote in shared:
        counts[vote.evaluator] += 1
    reliability = _most_better_than_chance(reliability, counts)
    return Reliability(reliability, counts, order_posteriors(votes, reliability), done, prior)


def _most_better_than_chance(reliability: dict[int, float], counts: dict[int, int]) -> dict[int, float]:
    """The solution or its mirror (every learned η → 1 − η), whichever has most of the evaluators
    that EM learned about above chance."""
    learned = [e for e in reliability if counts[e] > 0]
    if 2 * sum(reliability[e] > 0.5 for e in learned) >= len(learned):
        return reliability
    return {e: 1 - eta if counts[e] > 0 else eta for e, eta in reliability.items()}


def campaign_reliability(session: Session, campaign_id: int) -> Reliability:
    """The model fitted to every pairwise and ranking judgement of one campaign, gold items included."""
    return fit_reliability(votes_from_facts(load_judgement_facts(session, campaign_id)))
