"""Active selection's scores against hand-computed values, and its choice of items.

σ(2) = 0.880797, H(0.880797) = 0.365334 nats, ln 2 = 0.693147; members at raw scores 1 and 3
against 0: p = (0.731059, 0.952574), mean 0.841816, H(mean) = 0.436646, mean H = 0.386534.
"""

from __future__ import annotations

import math

import pytest

from alignloop.feedback.selection import (
    best_pair,
    item_score,
    mutual_information,
    pair_score,
    predictive_entropy,
    preference_probabilities,
    select_items,
)


def test_each_member_prefers_by_the_sigmoid_of_its_score_difference():
    assert preference_probabilities([2.0, -2.0], [0.0, 0.0]) == pytest.approx([0.8807970779778823, 0.11920292202211755])
    assert preference_probabilities([-800.0], [0.0]) == pytest.approx([0.0])  # no overflow far from 0


def test_members_who_agree_on_a_near_tie_teach_nothing_by_bald_but_look_unsure_by_entropy():
    tie = preference_probabilities([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert mutual_information(tie) == pytest.approx(0.0, abs=1e-12)
    assert predictive_entropy(tie) == pytest.approx(math.log(2))


def test_members_who_disagree_score_the_entropy_of_their_mean_minus_their_mean_entropy():
    split = preference_probabilities([2.0, -2.0], [0.0, 0.0])
    assert predictive_entropy(split) == pytest.approx(0.6931471805599453)
    assert mutual_information(split) == pytest.approx(0.6931471805599453 - 0.36533385508720784)
    leaning = preference_probabilities([1.0, 3.0], [0.0, 0.0])
    assert predictive_entropy(leaning) == pytest.approx(0.4366456409156684)
    assert mutual_information(leaning) == pytest.approx(0.05011160091833844)


def test_an_item_scores_the_mean_over_its_pairs_and_a_pairwise_task_shows_its_most_uncertain_pair():
    candidates = [[0.0, 0.0], [2.0, -2.0], [0.0, 0.0]]  # the middle one is where the members disagree
    disputed = 0.6931471805599453 - 0.36533385508720784
    assert item_score(candidates, "uncertainty") == pytest.approx((disputed + 0.0 + disputed) / 3)
    assert best_pair(candidates, "uncertainty")[:2] == (0, 1)  # (0, 1) and (1, 2) tie: the first
    assert best_pair(candidates, "uncertainty")[2] == pytest.approx(disputed)
    assert pair_score(candidates[0], candidates[2], "entropy") == pytest.approx(math.log(2))


def test_selection_takes_the_highest_scores_and_uniform_ignores_them_but_follows_its_seed():
    scores = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.0}
    assert select_items(scores, 2, "uncertainty", seed=0) == ["b", "c"]
    uniform = select_items(scores, 2, "uniform", seed=3)
    assert uniform == select_items(scores, 2, "uniform", seed=3) and len(set(uniform)) == 2
    assert {tuple(select_items(scores, 2, "uniform", seed=s)) for s in range(20)} != {tuple(uniform)}
    assert sorted(select_items(scores, 10, "entropy", seed=0)) == ["a", "b", "c", "d"]


def test_ties_are_broken_by_the_seed_not_by_the_order_given():
    scores = dict.fromkeys(range(10), 1.0)
    picks = {tuple(select_items(scores, 3, "uncertainty", seed=s)) for s in range(10)}
    assert len(picks) > 1


@pytest.mark.parametrize(("call", "message"), [
    (lambda: select_items({"a": 1.0}, 1, "margin", seed=0), "unknown selection 'margin'"),
    (lambda: pair_score([0.0], [1.0], "uniform"), "selection 'uniform' scores no pairs"),
    (lambda: preference_probabilities([0.0, 1.0], [1.0]), "one score per member"),
    (lambda: item_score([[0.0]], "uncertainty"), "two or more replies"),
])
def test_bad_requests_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
