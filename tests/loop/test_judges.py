"""A judge as the scripted annotators' scorer: each reply's mean debiased win probability against
the others shown with it, scored per set of replies.

Three replies with debiased P(0 ≻ 1) = 0.8, P(0 ≻ 2) = 0.6, P(1 ≻ 2) = 0.3 score
0: (0.8 + 0.6) / 2 = 0.70, 1: (0.2 + 0.3) / 2 = 0.25, 2: (0.4 + 0.7) / 2 = 0.55.
"""

from __future__ import annotations

import pytest

from alignloop.evaluation.judge import JudgeVerdicts
from alignloop.loop.annotators import _SharedScorer
from alignloop.loop.judges import JudgeScorer, JudgeSettings

PREFERENCES = {("a", "b"): 0.8, ("a", "c"): 0.6, ("b", "c"): 0.3}


class TableJudge:
    """P(first ≻ second) from a table, the same in both orders (no position bias)."""

    def __init__(self) -> None:
        self.calls = 0

    def judge(self, prompts, firsts, seconds) -> JudgeVerdicts:
        self.calls += 1
        p = [PREFERENCES[(a, b)] if (a, b) in PREFERENCES else 1 - PREFERENCES[(b, a)] for a, b in zip(firsts, seconds)]
        return JudgeVerdicts(as_given=p, swapped=[1 - value for value in p])


def test_each_reply_scores_its_mean_win_probability_against_the_others_shown():
    scorer = JudgeScorer(TableJudge())
    assert scorer(["q"] * 3, ["a", "b", "c"]) == pytest.approx([0.70, 0.25, 0.55])
    assert scorer(["q"] * 2, ["b", "a"]) == pytest.approx([0.2, 0.8])
    with pytest.raises(ValueError, match="two or more replies"):
        scorer(["q"], ["a"])


def test_the_shared_scorer_keeps_a_judges_scores_per_set_of_replies():
    judge = TableJudge()
    shared = _SharedScorer(JudgeScorer(judge))
    assert shared(["q", "q"], ["a", "b"]) == pytest.approx([0.8, 0.2])
    assert shared(["q", "q"], ["a", "c"]) == pytest.approx([0.6, 0.4])  # "a" scored again, against "c"
    assert shared(["q", "q"], ["a", "b"]) == pytest.approx([0.8, 0.2]) and judge.calls == 2  # the first set, cached


def test_an_endpoint_judge_needs_its_url():
    with pytest.raises(ValueError, match="needs base_url"):
        JudgeSettings(type="endpoint", model="m")
