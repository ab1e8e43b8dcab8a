"""Quality checks against numbers worked out by hand (or a textbook example), on plain data, and
one campaign report read from a real SQLite database."""

from __future__ import annotations

from itertools import count

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from alignloop.feedback.models import Assignment, Base, Campaign, Candidate, Item, Judgement, Role, TaskType, User
from alignloop.feedback.quality import (
    JudgementFacts,
    QualityThresholds,
    agreement_votes,
    assess,
    binomial_two_sided_p,
    campaign_report,
    consensus_counts,
    consensus_votes,
    gold_verdict,
    holm_adjusted,
    krippendorff_alpha,
    pairwise_kappas,
    quality_weight,
)

_ids = count(1)


def pairwise(evaluator: int, item: int, shown: tuple[int, int], better: int | str, *, duration_ms=9000, gold=None):
    """A pairwise judgement preferring candidate `better` (or "tie" / "both_bad") with `shown` on screen."""
    if better in ("tie", "both_bad"):
        answer = {"choice": better, "better": None}
    else:
        answer = {"choice": "a" if better == shown[0] else "b", "better": better}
    return JudgementFacts(next(_ids), item, evaluator, "pairwise", answer, shown, duration_ms, gold)


def rating(evaluator: int, item: int, candidate: int, scores: dict, *, gold=None):
    return JudgementFacts(next(_ids), item, evaluator, "rating", {"scores": scores}, (candidate,), 9000, gold)


def ranking(evaluator: int, item: int, ranks: dict, *, gold=None):
    return JudgementFacts(next(_ids), item, evaluator, "ranking", {"ranks": ranks}, tuple(ranks), 9000, gold)


def votes_of(facts, consensus=False):
    make = consensus_votes if consensus else agreement_votes
    return [vote for fact in facts for vote in make(fact)]


# ---------------------------------------------------------------- agreement


# Krippendorff's canonical example (Content Analysis, 2004; also the `krippendorff` package's
# docstring): 3 coders, 15 units, values 1-4, None = missing; nominal alpha = 0.691358.
CANONICAL = [
    [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
    [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
    [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
]


def test_nominal_alpha_on_krippendorffs_canonical_example_as_pairwise_answers():
    """Values 1-4 become: lower candidate id preferred, higher preferred, tie, both bad. Screen
    positions alternate between coders, so a position-based coding would get a different alpha."""
    facts = []
    for coder, row in enumerate(CANONICAL):
        for unit, value in enumerate(row):
            if value is None:
                continue
            low, high = 100 + 2 * unit, 101 + 2 * unit
            shown = (low, high) if (coder + unit) % 2 == 0 else (high, low)
            facts.append(pairwise(coder, unit, shown, {1: low, 2: high, 3: "tie", 4: "both_bad"}[value]))
    alpha, units = krippendorff_alpha(votes_of(facts), "nominal")
    assert alpha == pytest.approx(0.691358, abs=1e-6)
    assert units == 12  # units with at least two values (1, 2 and 14 are left with one or none)


def test_ordinal_alpha_by_hand():
    """Two raters, two units: (1, 1) and (2, 3). Value counts n1 = 2, n2 = 1, n3 = 1 (n = 4).
    Ordinal distances (sum of counts from c to k minus (n_c + n_k)/2, squared): d12 = 1.5² = 2.25,
    d13 = 2.5² = 6.25, d23 = 1² = 1. Observed D_o = (1/4)(1 + 1) = 0.5; expected
    D_e = (2/12)(2·1·2.25 + 2·1·6.25 + 1·1·1) = 3; alpha = 1 - 0.5/3 = 5/6 (nominal would give 0.4)."""
    facts = [rating(1, 1, 10, {"helpful": 1}), rating(2, 1, 10, {"helpful": 1}),
             rating(1, 2, 20, {"helpful": 2}), rating(2, 2, 20, {"helpful": 3})]
    assert krippendorff_alpha(votes_of(facts), "ordinal") == (pytest.approx(5 / 6), 2)
    assert krippendorff_alpha(votes_of(facts), "nominal")[0] == pytest.approx(0.4)


def test_ordinal_kappa_is_linearly_weighted():
    """A rates 1, 2, 3 and B 1, 3, 3. Disagreement weights |i - j|: observed sum 1 (the 2-vs-3);
    expected sum (1/3)·Σ a_i b_j |i - j| with a = (1, 1, 1), b = (1, 0, 2) = 9/3 = 3, so
    kappa = 1 - 1/3 = 2/3 (unweighted it would be (2/3 - 1/3) / (1 - 1/3) = 0.5)."""
    facts = [rating(evaluator, item, item, {"helpful": score})
             for evaluator, scores in ((1, (1, 2, 3)), (2, (1, 3, 3))) for item, score in enumerate(scores)]
    assert pairwise_kappas(votes_of(facts), "ordinal", min_shared=3) == {(1, 2): pytest.approx(2 / 3)}


def test_perfect_agreement_gives_one_and_a_single_value_gives_none():
    agreeing = [pairwise(e, item, (2 * item, 2 * item + 1), 2 * item + item % 2) for e in (1, 2) for item in range(6)]
    assert krippendorff_alpha(votes_of(agreeing), "nominal") == (1.0, 6)
    assert pairwise_kappas(votes_of(agreeing), "nominal", min_shared=5) == {(1, 2): 1.0}
    always_low = [pairwise(e, item, (2 * item, 2 * item + 1), 2 * item) for e in (1, 2) for item in range(6)]
    assert krippendorff_alpha(votes_of(always_low), "nominal") == (None, 6)
    assert pairwise_kappas(votes_of(always_low), "nominal", min_shared=5) == {}  # kappa undefined: left out


def test_cohen_kappa_by_hand_and_the_shared_item_minimum():
    """A prefers low, low, high, high, low; B low, high, high, high, low. p_o = 4/5; marginals
    A (3/5, 2/5), B (2/5, 3/5): p_e = 0.6·0.4 + 0.4·0.6 = 0.48; kappa = 0.32 / 0.52 = 8/13."""
    a_choices, b_choices = "LLHHL", "LHHHL"
    facts = []
    for item, (a, b) in enumerate(zip(a_choices, b_choices)):
        low, high = 10 * item, 10 * item + 1
        facts.append(pairwise(1, item, (low, high), low if a == "L" else high))
        facts.append(pairwise(2, item, (high, low), low if b == "L" else high))
    assert pairwise_kappas(votes_of(facts), "nominal", min_shared=5) == {(1, 2): pytest.approx(8 / 13)}
    assert pairwise_kappas(votes_of(facts), "nominal", min_shared=6) == {}


# ---------------------------------------------------------------- gold, position, speed, consensus


def test_gold_verdicts_by_task_type():
    gold_pair = {"pairwise": {"better": "7"}}  # JSON may hold the id as a string
    assert gold_verdict(pairwise(1, 1, (7, 8), 7, gold=gold_pair)) is True
    assert gold_verdict(pairwise(1, 1, (8, 7), 8, gold=gold_pair)) is False
    assert gold_verdict(pairwise(1, 1, (7, 8), "tie", gold=gold_pair)) is False
    gold_rank = {"ranking": {"ranks": {"7": 1, "8": 2, "9": 3}}}
    assert gold_verdict(ranking(1, 1, {"7": 1, "8": 3, "9": 2}, gold=gold_rank)) is True  # only the top counts
    assert gold_verdict(ranking(1, 1, {"7": 1, "8": 1, "9": 2}, gold=gold_rank)) is False  # top tied with 8
    gold_rating = {"rating": {"scores": {"helpful": 5, "honest": 2}}}
    assert gold_verdict(rating(1, 1, 7, {"helpful": 6, "honest": 1}, gold=gold_rating)) is True  # within ±1
    assert gold_verdict(rating(1, 1, 7, {"helpful": 3, "honest": 2}, gold=gold_rating)) is False
    assert gold_verdict(rating(1, 1, 7, {"harmless": 3}, gold=gold_rating)) is None  # no axis in common
    assert gold_verdict(pairwise(1, 1, (7, 8), 7, gold=gold_rating)) is None  # no pairwise gold answer
    assert gold_verdict(pairwise(1, 1, (7, 8), 7)) is None


def test_exact_binomial_p_values():
    assert binomial_two_sided_p(20, 20) == 2 * 0.5**20
    assert binomial_two_sided_p(0, 20) == 2 * 0.5**20
    # P(X >= 15 | n = 20) = (C(20,15) + ... + C(20,20)) / 2^20 = (15504 + 4845 + 1140 + 190 + 20 + 1) / 2^20
    assert binomial_two_sided_p(15, 20) == pytest.approx(2 * 21700 / 2**20)
    assert binomial_two_sided_p(10, 20) == 1.0
    assert binomial_two_sided_p(0, 0) == 1.0
    assert binomial_two_sided_p(1500, 2000) < 1e-100  # exact far into the tail, no underflow to a wrong 0 first
    assert binomial_two_sided_p(1000, 2000) == 1.0


def always_left(evaluator: int, answers: int) -> list[JudgementFacts]:
    """An evaluator who picks whatever is shown first, on items nobody else judged."""
    return [pairwise(evaluator, 1000 * evaluator + i, (2 * i + (i % 2), 2 * i + 1 - (i % 2)),
                     2 * i + (i % 2)) for i in range(answers)]


def test_position_bias_is_flagged_from_twenty_answers():
    _, [lefty] = assess(always_left(1, 20), min_seconds=3)
    assert (lefty.position.first_shown, lefty.position.answers) == (20, 20)
    assert lefty.position.p_value == 2 * 0.5**20
    assert lefty.flags == ("position bias: first shown chosen in 20/20 pairwise answers (p = 1.9e-06)",)
    _, [few] = assess(always_left(2, 19), min_seconds=3)
    assert few.position.p_value < 0.01 and few.flags == ()  # too few answers to call it


def left_in(evaluator: int, left: int, answers: int) -> list[JudgementFacts]:
    """An evaluator who picks the first-shown candidate in `left` of `answers` items of their own."""
    return [pairwise(evaluator, 1000 * evaluator + i, (2 * i, 2 * i + 1), 2 * i if i < left else 2 * i + 1)
            for i in range(answers)]


def test_holm_adjusted_p_values_by_hand():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm_adjusted([]) == []


def test_position_bias_is_tested_over_the_campaigns_evaluators():
    """18 of 22 first-shown: p = 0.0043, flagged when tested alone; beside an always-left
    evaluator and two balanced ones (4 tested, it ranks second), Holm's adjusted p is 3 x 0.0043
    = 0.013, not below 0.01, while the always-left one's 4 x 1.9e-6 still is."""
    p_alone = binomial_two_sided_p(18, 22)
    assert p_alone == pytest.approx(0.00434, abs=1e-5)
    _, [alone] = assess(left_in(1, 18, 22), min_seconds=3)
    assert alone.position.family == 1 and alone.flags == (
        f"position bias: first shown chosen in 18/22 pairwise answers (p = {p_alone:.2g})",)
    facts = left_in(1, 18, 22) + always_left(2, 20) + left_in(3, 11, 22) + left_in(4, 11, 22) + left_in(5, 19, 19)
    _, rows = assess(facts, min_seconds=3)
    mostly_left, lefty, *balanced, untested = rows
    assert mostly_left.position.adjusted_p == pytest.approx(3 * p_alone) and mostly_left.flags == ()
    assert lefty.flags == ("position bias: first shown chosen in 20/20 pairwise answers "
                           "(p = 1.9e-06, 7.6e-06 adjusted for 4 evaluators)",)
    assert all(row.flags == () and row.position.family == 4 for row in balanced)
    assert untested.position.adjusted_p is None and untested.flags == ()  # 19 answers: not tested


def test_ties_do_not_count_towards_position_bias():
    facts = [pairwise(1, 1, (1, 2), 1), pairwise(1, 2, (3, 4), 4), pairwise(1, 3, (5, 6), "tie")]
    _, [row] = assess(facts, min_seconds=3)
    assert (row.position.first_shown, row.position.answers, row.position.share) == (1, 2, 0.5)


def test_fast_share_counts_only_timed_answers():
    """min_seconds 3: 1 s and 2.999 s are too fast, 3 s and 5 s are not, no duration is not timed."""
    durations = [1000, 2999, 3000, 5000, None]
    facts = [pairwise(1, i, (2 * i, 2 * i + 1), 2 * i, duration_ms=d) for i, d in enumerate(durations)]
    _, [row] = assess(facts, min_seconds=3)
    assert (row.fast_answers, row.timed_answers, row.fast_share) == (2, 4, 0.5)
    assert row.flags == ("50% of answers implausibly fast (above 30%)",)


def test_leave_one_out_consensus():
    """Unit 1: A, B prefer 10, C prefers 11. A's others (B: 10, C: 11) are split: not counted; same
    for B; C's others agree on 10: C differs. Unit 2 (A: 20, C: 21): each is compared with the
    other alone, and both differ. Unit 3 (ratings 5, 6, 2 on a 7-point scale, tolerance 1):
    A's others 6 and 2 split, B's others 5 and 2 split, C's others split. Nothing counted."""
    facts = [
        pairwise(1, 1, (10, 11), 10), pairwise(2, 1, (11, 10), 10), pairwise(3, 1, (10, 11), 11),
        pairwise(1, 2, (20, 21), 20), pairwise(3, 2, (21, 20), 21),
        rating(1, 3, 30, {"helpful": 5}), rating(2, 3, 30, {"helpful": 6}), rating(3, 3, 30, {"helpful": 2}),
    ]
    assert consensus_counts(votes_of(facts, consensus=True)) == {1: (1, 1), 3: (2, 2)}


def test_consensus_on_ratings_allows_the_tolerance_and_rankings_compare_the_top():
    """Ratings 4 and 4 by others vs 5: within ±1, agrees; vs 6: differs. Rankings: the others'
    top choice is candidate 1; an evaluator who puts 1 first (whatever the rest) agrees."""
    facts = [
        rating(1, 1, 10, {"helpful": 4}), rating(2, 1, 10, {"helpful": 4}), rating(3, 1, 10, {"helpful": 5}),
        rating(4, 1, 10, {"helpful": 6}),
        ranking(1, 2, {"1": 1, "2": 2, "3": 3}), ranking(2, 2, {"1": 1, "2": 3, "3": 2}),
        ranking(3, 2, {"1": 1, "2": 2, "3": 3}), ranking(4, 2, {"2": 1, "1": 2, "3": 3}),
    ]
    # Ratings: 1's others are 4, 5, 6 (no repeat: split), 2 likewise; 3's others 4, 4, 6: 4 agrees;
    # 4's others 4, 4, 5: 4 is two away. Rankings: 1, 2, 3's others have top (1,) twice or more.
    counts = consensus_counts(votes_of(facts, consensus=True), rating_tolerance=1.0)
    assert counts == {1: (1, 0), 2: (1, 0), 3: (2, 0), 4: (2, 2)}


def test_consensus_disagreement_flag_needs_ten_comparable_answers():
    def contrarian(items: int) -> list[JudgementFacts]:
        facts = []
        for item in range(items):
            low, high = 2 * item, 2 * item + 1
            facts += [pairwise(1, item, (low, high), low), pairwise(2, item, (high, low), low),
                      pairwise(3, item, (low, high), high)]
        return facts

    rows = {row.evaluator_id: row for row in assess(contrarian(10), min_seconds=3)[1]}
    assert (rows[3].consensus_compared, rows[3].consensus_differing) == (10, 10)
    assert rows[3].flags == ("disagrees with the other evaluators on 100% of 10 answers (above 50%)",)
    assert rows[1].flags == () and rows[1].consensus_compared == 0  # others split 1:1
    rows = {row.evaluator_id: row for row in assess(contrarian(9), min_seconds=3)[1]}
    assert rows[3].consensus_disagreement == 1.0 and rows[3].flags == ()


def test_gold_accuracy_flag_and_quality_weight():
    """Evaluator 1: 1 of 3 gold right -> 33% < 60%: flagged; weight (1 + 1) / (3 + 2) = 0.4.
    Evaluator 2: 0 of 2 gold right -> too few to flag; weight (0 + 1) / (2 + 2) = 0.25."""
    facts = []
    for item in range(3):
        gold = {"pairwise": {"better": 10 * item}}
        shown = (10 * item, 10 * item + 1)
        facts.append(pairwise(1, item, shown, 10 * item if item == 0 else 10 * item + 1, gold=gold))
        if item < 2:
            facts.append(pairwise(2, item, shown, 10 * item + 1, gold=gold))
    rows = {row.evaluator_id: row for row in assess(facts, min_seconds=3)[1]}
    assert (rows[1].gold_correct, rows[1].gold_answers) == (1, 3)
    assert rows[1].flags == ("gold accuracy 33% on 3 gold answers (below 60%)",)
    assert rows[1].weight == pytest.approx(0.4)
    assert rows[2].flags == () and rows[2].weight == pytest.approx(0.25)


def test_quality_weight_formula():
    assert quality_weight(3, 3, 0.25, prior_answers=2) == pytest.approx(0.8 * 0.75)  # (3 + 1) / 5 · (1 - 0.25)
    assert quality_weight(0, 0, None, prior_answers=2) == 0.5  # no evidence: everyone equal
    assert quality_weight(10, 10, 1.0, prior_answers=2) == 0.0  # every answer too fast


def test_thresholds_are_configurable():
    facts = always_left(1, 10)
    assert assess(facts, min_seconds=3)[1][0].flags == ()
    strict = QualityThresholds(min_pairwise_answers=10)
    assert assess(facts, min_seconds=3, thresholds=strict)[1][0].flagged


# ---------------------------------------------------------------- from the database


def test_campaign_report_reads_a_campaign_from_sqlite(tmp_path):
    """Two evaluators on 6 pairwise items: ann always prefers the lower id, bob agrees on 5 of 6.
    Kappa: p_o = 5/6; ann's marginal (1, 0) makes p_e = bob's share of "low" = 5/6, so kappa = 0.
    Ann also answers 1 gold item right and 1 of 6 answers in 1 s (min_seconds 3)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'feedback.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        campaign = Campaign(name="c1", task_types=["pairwise"], min_seconds=3)
        ann, bob = (User(username=name, role=Role.evaluator, password_hash="x") for name in ("ann", "bob"))
        session.add_all([campaign, ann, bob])
        session.flush()
        for index in range(6):
            item = Item(campaign_id=campaign.id, prompt=f"p{index}",
                        candidates=[Candidate(text="x"), Candidate(text="y")])
            session.add(item)
            session.flush()
            low, high = (c.id for c in item.candidates)
            if index == 0:
                item.is_gold, item.gold = True, {"pairwise": {"better": low}}
            answers = ((ann, low, 1000 if index == 0 else 5000), (bob, high if index == 5 else low, 5000))
            for user, better, duration in answers:
                shown = [high, low] if user is bob else [low, high]
                assignment = Assignment(campaign_id=campaign.id, item_id=item.id, evaluator_id=user.id,
                                        task_type=TaskType.pairwise, shown_order=shown)
                session.add(assignment)
                session.flush()
                session.add(Judgement(
                    assignment_id=assignment.id, campaign_id=campaign.id, item_id=item.id, evaluator_id=user.id,
                    task_type=TaskType.pairwise, shown_order=shown, duration_ms=duration,
                    answer={"choice": "a" if better == shown[0] else "b", "better": better, "strength": 1},
                ))
        session.commit()
        report = campaign_report(session, campaign.id)
        with pytest.raises(LookupError, match="no campaign with id 999"):
            campaign_report(session, 999)
    engine.dispose()

    assert (report.campaign_name, report.judgements) == ("c1", 12)
    pairwise_agreement = report.agreement["pairwise"]
    assert (pairwise_agreement.level, pairwise_agreement.units) == ("nominal", 6)
    assert pairwise_agreement.mean_kappa == pytest.approx(0.0)
    rows = {row.username: row for row in report.evaluators}
    assert (rows["ann"].gold_correct, rows["ann"].gold_answers, rows["ann"].fast_answers) == (1, 1, 1)
    assert rows["ann"].weight == pytest.approx((1 + 1) / (1 + 2) * (1 - 1 / 6))
    assert rows["bob"].position.first_shown == 1  # bob saw (high, low) and chose high once
    assert report.gold_accuracy == 1.0 and report.fast_share == pytest.approx(1 / 12)
    assert report.flagged == []
