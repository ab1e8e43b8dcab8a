"""Evaluator reliability fitted to the judgements alone (one-coin Dawid–Skene EM)."""

from __future__ import annotations

import math
import random

import pytest

from alignloop.feedback.quality import JudgementFacts
from alignloop.feedback.reliability import Vote, fit_reliability, order_posteriors, votes_from_facts


def test_a_votes_weight_in_the_posterior_is_the_log_odds_of_its_evaluators_reliability():
    # Two evaluators at 0.9 say "first", one at 0.8 says "second":
    # log-odds = 2 ln 9 - ln 4 = ln(81 / 4), so P(first) = 81 / 85.
    votes = [Vote(1, (7, 1, 2), True), Vote(2, (7, 1, 2), True), Vote(3, (7, 1, 2), False)]
    posterior = order_posteriors(votes, {1: 0.9, 2: 0.9, 3: 0.8})
    assert posterior[(7, 1, 2)] == pytest.approx(81 / 85, abs=1e-12)
    # An evaluator at 0.2 saying "second" is as good as one at 0.8 saying "first".
    assert order_posteriors([Vote(3, (7, 1, 2), False)], {3: 0.2})[(7, 1, 2)] == pytest.approx(0.8)


def test_pairwise_and_ranking_answers_become_order_votes_and_ties_say_nothing():
    facts = [
        JudgementFacts(1, 10, 5, "pairwise", {"choice": "a", "better": 22}, (22, 21)),
        JudgementFacts(2, 10, 6, "pairwise", {"choice": "tie", "better": None}, (21, 22)),
        JudgementFacts(3, 11, 5, "ranking", {"ranks": {"31": 2, "32": 1, "33": 2}}, (31, 32, 33)),
    ]
    assert votes_from_facts(facts) == [
        Vote(5, (10, 21, 22), False),  # 22 preferred: the lower id, 21, is not the better
        Vote(5, (11, 31, 32), False),
        Vote(5, (11, 32, 33), True),  # 31 and 33 share a rank: no vote on their order
    ]


def simulated_votes(reliability: dict[int, float], pairs: int, per_pair: int, seed: int) -> list[Vote]:
    rng = random.Random(seed)
    votes = []
    for pair in range(pairs):
        truth = rng.random() < 0.5
        for evaluator in rng.sample(sorted(reliability), per_pair):
            votes.append(Vote(evaluator, (pair, 0, 1), truth if rng.random() < reliability[evaluator] else not truth))
    return votes


def test_em_tells_reliable_random_and_opposite_evaluators_apart_without_gold():
    truth = {**dict.fromkeys(range(6), 0.9), 6: 0.1, 7: 0.1, 8: 0.5, 9: 0.5}  # 2 malicious, 2 random
    fit = fit_reliability(simulated_votes(truth, pairs=300, per_pair=3, seed=0))
    # ~90 votes each: η's binomial standard error is ~0.03-0.05, so 0.1 of slack is 2-3 of them.
    assert all(abs(fit.reliability[e] - eta) < 0.1 for e, eta in truth.items())
    assert [fit.verdict(e) for e in range(10)] == ["reliable"] * 6 + ["malicious"] * 2 + ["noisy"] * 2
    weights = fit.vote_weights()
    assert weights[6] == weights[7] == 0.0 and all(weights[e] > 1.5 for e in range(6))  # logit(0.9) = 2.2
    assert fit.iterations < 200  # converged


def test_an_evaluator_with_few_votes_stays_near_chance_and_undecided():
    votes = [Vote(1, (0, 0, 1), True), Vote(2, (0, 0, 1), True), Vote(3, (0, 0, 1), False)]
    fit = fit_reliability(votes)
    assert fit.verdict(3) == "noisy" and fit.spread(3) > 0.2
    assert math.isclose(fit.reliability[1], fit.reliability[2])


def test_an_evaluator_alone_on_every_pair_they_judged_is_unknown_not_reliable():
    # Alone on a pair, an evaluator agrees with the consensus they make: that says nothing.
    votes = [Vote(1, (0, 0, 1), True), Vote(2, (0, 0, 1), True), Vote(3, (1, 0, 1), False), Vote(3, (2, 0, 1), True)]
    fit = fit_reliability(votes)
    assert fit.votes == {1: 1, 2: 1, 3: 0} and fit.verdict(3) == "unknown"
    assert fit.reliability[3] == 0.75  # the starting belief, which still weighs its votes in an export
    assert fit.posteriors[(1, 0, 1)] == pytest.approx(0.25) and fit.vote_weights()[3] == pytest.approx(math.log(3))


def test_of_a_solution_and_its_mirror_the_one_where_most_evaluators_beat_chance_is_kept():
    from alignloop.feedback.reliability import _most_better_than_chance

    mirrored = _most_better_than_chance({1: 0.1, 2: 0.2, 3: 0.9, 4: 0.75}, {1: 5, 2: 5, 3: 5, 4: 0})
    assert mirrored == pytest.approx({1: 0.9, 2: 0.8, 3: 0.1, 4: 0.75})  # 4 learned nothing: its start stays
    kept = {1: 0.9, 2: 0.8, 3: 0.1}
    assert _most_better_than_chance(kept, dict.fromkeys(kept, 5)) == kept


def test_four_consistent_malicious_evaluators_of_ten_are_found_however_em_starts():
    truth = {**dict.fromkeys(range(6), 0.8), **dict.fromkeys(range(6, 10), 0.0)}
    for seed in range(5):
        fit = fit_reliability(simulated_votes(truth, pairs=200, per_pair=3, seed=seed))
        assert [fit.verdict(e) for e in range(10)] == ["reliable"] * 6 + ["malicious"] * 4, seed
