"""How far to trust each evaluator: agreement, gold accuracy, position bias, speed, consensus.

Everything is derived from stored judgements. The checks are pure functions over plain
`JudgementFacts` (tests build them by hand); `campaign_report` loads a campaign's judgements
from the database and runs them all, and the admin dashboard shows its result.

What two answers have in common has to be decided before anything can be compared:

* pairwise answers are compared by the candidate preferred, never by screen position (A/B are
  shuffled per evaluator). For agreement statistics the category must also mean the same thing
  on every item, so it is coded by candidate id order: 0 = the lower candidate id preferred,
  1 = the higher one, 2 = tie, 3 = both bad (nominal).
* rankings are compared candidate by candidate: the dense rank each evaluator gave it (ordinal);
  for gold and consensus, by the top choice (the set of candidates ranked first).
* ratings are compared per rated candidate and rubric axis (ordinal); gold and consensus count
  a score within `rating_tolerance` (default ±1) as the same answer. A rating rates one
  candidate: `answer["candidate_id"]` when given, else the one shown (`shown_order[0]`).
* comments and edits are free text: they count towards speed, nothing else.

Statistics, with the choices made where the textbooks leave room:

* Krippendorff's alpha (the `krippendorff` package) over units with at least two answers;
  None when fewer than two distinct values occur (expected disagreement is then zero).
* Cohen's kappa (scikit-learn) for each evaluator pair sharing at least `min_shared_items`
  units; linearly weighted for ordinal data. Pairs whose kappa is undefined (both always gave
  the same single value) are left out of the means.
* Position bias: the share of decided pairwise answers (not tie / both bad) that picked the
  candidate shown first, with an EXACT two-sided binomial test against 1/2 (twice the smaller
  tail, summed with integer binomial coefficients — no normal approximation at any n).
* Fast answers: the share of answers with a recorded duration under `Campaign.min_seconds`.
* Consensus: an answer disagrees when it differs from the plurality of the OTHER evaluators on
  the same unit (leave-one-out); a unit whose others are split evenly at the top is not counted.

The quality weight of an evaluator (used by weighted exports) is their gold accuracy shrunk
toward 0.5 by `gold_prior_answers` pseudo-answers, times the share of answers that were not
implausibly fast: `(correct + 0.5·prior) / (gold + prior) · (1 − fast_share)`. With no gold
answers at all everyone starts at 0.5, so weighting reduces to a plain vote.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select
from sqlalchemy.orm import Session

from alignloop.feedback.models import Campaign, Item, Judgement, User

__all__ = [
    "QualityThresholds", "JudgementFacts", "PositionBias", "Agreement", "EvaluatorQuality", "CampaignQuality",
    "TIE_CHOICES", "LEVELS", "preferred_candidate", "dense_ranks", "top_choice", "rated_candidate", "Vote",
    "agreement_votes", "consensus_votes", "krippendorff_alpha", "pairwise_kappas", "gold_verdict",
    "binomial_two_sided_p", "holm_adjusted", "consensus_counts",
    "quality_weight", "evaluator_flags", "assess", "load_judgement_facts", "campaign_report",
]

TIE_CHOICES = ("tie", "both_bad")  # pairwise answers that prefer neither candidate
_PAIRWISE_CODES = {"tie": 2, "both_bad": 3}
LEVELS = {"pairwise": "nominal", "ranking": "ordinal", "rating": "ordinal"}  # task types with agreement


@dataclass(frozen=True)
class QualityThresholds:
    """When an evaluator is flagged, and the knobs of the statistics behind the flags."""

    min_shared_items: int = 5  # an evaluator pair needs this many shared units for a kappa
    min_gold_accuracy: float = 0.6  # flag below this accuracy on gold items ...
    min_gold_answers: int = 3  # ... once there are at least this many gold answers
    max_position_bias_p: float = 0.01  # flag a first-shown preference this unlikely by chance (Holm) ...
    min_pairwise_answers: int = 20  # ... once there are at least this many decided pairwise answers
    max_fast_share: float = 0.3  # flag when more than this share of answers is implausibly fast
    max_consensus_disagreement: float = 0.5  # flag when disagreeing with the others more often ...
    min_consensus_answers: int = 10  # ... over at least this many comparable answers
    rating_tolerance: float = 1.0  # scores this close count as the same answer (gold, consensus)
    gold_prior_answers: float = 2.0  # pseudo-answers at 0.5 that shrink gold accuracy in the weight


@dataclass(frozen=True)
class JudgementFacts:
    """One judgement as the quality checks and exports see it (plain data, no database)."""

    judgement_id: int
    item_id: int
    evaluator_id: int
    task_type: str
    answer: Mapping[str, Any]  # the JSON shape documented on `models.Judgement`
    shown_order: tuple[int, ...]  # candidate ids as displayed, first = left / top
    duration_ms: int | None = None
    gold: Mapping[str, Any] | None = None  # the item's known answer, for gold items


# ---------------------------------------------------------------- reading one answer


def _candidate_or_tie(value: Any) -> int | str:
    # JSON object keys are strings, so ids arrive as "17" as often as 17.
    return value if value in TIE_CHOICES else int(value)


def preferred_candidate(fact: JudgementFacts) -> int | str:
    """The candidate id preferred in a pairwise answer, or "tie" / "both_bad"."""
    choice = fact.answer["choice"]
    return choice if choice in TIE_CHOICES else int(fact.answer["better"])


def dense_ranks(ranks: Mapping[Any, Any]) -> dict[int, int]:
    """{candidate id: rank} renumbered 1, 2, 3 without gaps, so that 1,1,3 and 1,1,2 compare equal."""
    levels = {rank: position for position, rank in enumerate(sorted(set(ranks.values())), start=1)}
    return {int(candidate): levels[rank] for candidate, rank in ranks.items()}


def top_choice(ranks: Mapping[Any, Any]) -> tuple[int, ...]:
    """The candidates ranked first (several when tied), sorted."""
    best = min(ranks.values())
    return tuple(sorted(int(candidate) for candidate, rank in ranks.items() if rank == best))


def rated_candidate(fact: JudgementFacts) -> int:
    """The candidate a rating is about (see the module docstring)."""
    return int(fact.answer.get("candidate_id", fact.shown_order[0]))


@dataclass(frozen=True)
class Vote:
    """One comparable piece of an answer: the statistics pair up votes on the same unit."""

    unit: tuple[Any, ...]  # what was judged; answers on the same unit are comparable
    evaluator_id: int
    value: Any


def agreement_votes(fact: JudgementFacts) -> list[Vote]:
    """What an answer says, per unit, in the form the agreement statistics compare."""
    if fact.task_type == "pairwise":
        low, high = sorted(fact.shown_order[:2])
        preferred = preferred_candidate(fact)
        code = _PAIRWISE_CODES.get(preferred, 0 if preferred == low else 1)
        return [Vote(("pairwise", fact.item_id, low, high), fact.evaluator_id, code)]
    if fact.task_type == "ranking":
        ranks = dense_ranks(fact.answer["ranks"])
        return [Vote(("ranking", fact.item_id, c), fact.evaluator_id, rank) for c, rank in sorted(ranks.items())]
    if fact.task_type == "rating":
        candidate = rated_candidate(fact)
        return [Vote(("rating", fact.item_id, candidate, axis), fact.evaluator_id, float(score))
                for axis, score in sorted(fact.answer["scores"].items())]
    return []


def consensus_votes(fact: JudgementFacts) -> list[Vote]:
    """As `agreement_votes`, except that a ranking is one vote for its top choice."""
    if fact.task_type == "ranking":
        return [Vote(("ranking-top", fact.item_id), fact.evaluator_id, top_choice(fact.answer["ranks"]))]
    return agreement_votes(fact)


def _same_answer(unit: tuple[Any, ...], first: Any, second: Any, rating_tolerance: float) -> bool:
    if unit[0] == "rating":
        return abs(first - second) <= rating_tolerance
    return first == second


# ---------------------------------------------------------------- agreement


def _by_unit(votes: Iterable[Vote]) -> dict[tuple[Any, ...], list[Vote]]:
    grouped: dict[tuple[Any, ...], list[Vote]] = defaultdict(list)
    for vote in votes:
        grouped[vote.unit].append(vote)
    return grouped


def krippendorff_alpha(votes: Iterable[Vote], level: str) -> tuple[float | None, int]:
    """(alpha, number of units with at least two answers); alpha None when it is undefined."""
    units = [unit_votes for unit_votes in _by_unit(votes).values() if len(unit_votes) >= 2]
    domain = sorted({vote.value for unit_votes in units for vote in unit_votes})
    if len(domain) < 2:
        return None, len(units)
    column = {value: index for index, value in enumerate(domain)}
    counts = np.zeros((len(units), len(domain)))
    for row, unit_votes in enumerate(units):
        for vote in unit_votes:
            counts[row, column[vote.value]] += 1
    alpha = krippendorff.alpha(value_counts=counts, value_domain=domain, level_of_measurement=level)
    return float(alpha), len(units)


def pairwise_kappas(votes: Iterable[Vote], level: str, min_shared: int) -> dict[tuple[int, int], float]:
    """Cohen's kappa of every evaluator pair with at least `min_shared` shared units."""
    answers: dict[int, dict[tuple[Any, ...], Any]] = defaultdict(dict)
    for vote in votes:
        answers[vote.evaluator_id][vote.unit] = vote.value
    kappas: dict[tuple[int, int], float] = {}
    for first, second in combinations(sorted(answers), 2):
        shared = sorted(answers[first].keys() & answers[second].keys())
        if len(shared) < min_shared:
            continue
        with warnings.catch_warnings():  # one label only: kappa undefined, reported as nan below
            warnings.simplefilter("ignore")
            kappa = cohen_kappa_score(
                [answers[first][unit] for unit in shared], [answers[second][unit] for unit in shared],
                weights="linear" if level == "ordinal" else None,
            )
        if not np.isnan(kappa):
            kappas[(first, second)] = float(kappa)
    return kappas


# ---------------------------------------------------------------- gold, position, consensus


def gold_verdict(fact: JudgementFacts, rating_tolerance: float = 1.0) -> bool | None:
    """Whether an answer matches its item's known answer; None when there is none to compare."""
    known = (fact.gold or {}).get(fact.task_type)
    if known is None:
        return None
    if fact.task_type == "pairwise":
        return preferred_candidate(fact) == _candidate_or_tie(known["better"])
    if fact.task_type == "ranking":
        return top_choice(fact.answer["ranks"]) == top_choice(known["ranks"])
    if fact.task_type == "rating":
        scores, expected = fact.answer["scores"], known["scores"]
        axes = scores.keys() & expected.keys()
        return all(abs(scores[a] - expected[a]) <= rating_tolerance for a in axes) if axes else None
    return None


def binomial_two_sided_p(successes: int, trials: int) -> float:
    """Exact two-sided binomial test of `successes` in `trials` against p = 1/2.

    Twice the smaller tail, capped at 1; the tail is a sum of integer binomial coefficients over
    2^n, so it stays exact at any n (Python divides big integers correctly rounded).
    """
    if trials == 0:
        return 1.0
    tail, coefficient = 0, 1
    for successes_in_tail in range(min(successes, trials - successes) + 1):
        tail += coefficient
        coefficient = coefficient * (trials - successes_in_tail) // (successes_in_tail + 1)
    return min(1.0, 2 * tail / 2**trials)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order. Flagging those below
    α keeps the chance of flagging any evaluator who has no bias at most α over the whole
    campaign: with 0.01 per evaluator unadjusted, about one honest evaluator in a hundred was
    flagged by chance."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PositionBias:
    """How often decided pairwise answers picked the candidate shown first (left); `adjusted_p`
    is the test's p-value adjusted over the `family` evaluators tested in the campaign."""

    first_shown: int = 0
    answers: int = 0
    adjusted_p: float | None = None
    family: int = 1

    @property
    def share(self) -> float | None:
        return self.first_shown / self.answers if self.answers else None

    @property
    def p_value(self) -> float:
        return binomial_two_sided_p(self.first_shown, self.answers)


def _position_bias(facts: Iterable[JudgementFacts]) -> PositionBias:
    decided = [f for f in facts if f.task_type == "pairwise" and preferred_candidate(f) not in TIE_CHOICES]
    return PositionBias(sum(preferred_candidate(f) == f.shown_order[0] for f in decided), len(decided))


def consensus_counts(votes: Iterable[Vote], rating_tolerance: float = 1.0) -> dict[int, tuple[int, int]]:
    """{evaluator: (answers compared, answers differing)} against the leave-one-out plurality."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for unit, unit_votes in _by_unit(votes).items():
        for vote in unit_votes:
            others = Counter(other.value for other in unit_votes if other.evaluator_id != vote.evaluator_id)
            top = others.most_common(2)
            if not top or (len(top) == 2 and top[0][1] == top[1][1]):
                continue
            counts[vote.evaluator_id][0] += 1
            counts[vote.evaluator_id][1] += not _same_answer(unit, vote.value, top[0][0], rating_tolerance)
    return {evaluator: (compared, differing) for evaluator, (compared, differing) in counts.items()}


# ---------------------------------------------------------------- per evaluator


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class EvaluatorQuality:
    """One evaluator's numbers, flags (reasons, in words) and weight, for the dashboard and exports."""

    evaluator_id: int
    username: str
    judgements: int
    gold_answers: int
    gold_correct: int
    position: PositionBias
    timed_answers: int
    fast_answers: int
    consensus_compared: int
    consensus_differing: int
    mean_kappa: float | None
    kappa_pairs: int
    flags: tuple[str, ...] = ()
    weight: float = 0.5

    @property
    def gold_accuracy(self) -> float | None:
        return _share(self.gold_correct, self.gold_answers)

    @property
    def fast_share(self) -> float | None:
        return _share(self.fast_answers, self.timed_answers)

    @property
    def consensus_disagreement(self) -> float | None:
        return _share(self.consensus_differing, self.consensus_compared)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


def quality_weight(gold_correct: int, gold_answers: int, fast_share: float | None, prior_answers: float) -> float:
    """Gold accuracy shrunk toward 0.5, times the share of answers that were not too fast; in [0, 1]."""
    evidence = gold_answers + prior_answers
    shrunk_accuracy = (gold_correct + 0.5 * prior_answers) / evidence if evidence else 0.5
    return shrunk_accuracy * (1.0 - (fast_share or 0.0))


def evaluator_flags(row: EvaluatorQuality, thresholds: QualityThresholds) -> tuple[str, ...]:
    """The reasons to distrust an evaluator, each with the number that tripped it."""
    flags = []
    if row.gold_answers >= thresholds.min_gold_answers and row.gold_accuracy < thresholds.min_gold_accuracy:
        flags.append(f"gold accuracy {row.gold_accuracy:.0%} on {row.gold_answers} gold answers "
                     f"(below {thresholds.min_gold_accuracy:.0%})")
    bias = row.position
    p_value = bias.adjusted_p if bias.adjusted_p is not None else bias.p_value
    if bias.answers >= thresholds.min_pairwise_answers and p_value < thresholds.max_position_bias_p:
        family = f", {p_value:.2g} adjusted for {bias.family} evaluators" if bias.family > 1 else ""
        flags.append(f"position bias: first shown chosen in {bias.first_shown}/{bias.answers} "
                     f"pairwise answers (p = {bias.p_value:.2g}{family})")
    if row.fast_share is not None and row.fast_share > thresholds.max_fast_share:
        flags.append(f"{row.fast_share:.0%} of answers implausibly fast (above {thresholds.max_fast_share:.0%})")
    disagreement = row.consensus_disagreement
    if (row.consensus_compared >= thresholds.min_consensus_answers
            and disagreement > thresholds.max_consensus_disagreement):
        flags.append(f"disagrees with the other evaluators on {disagreement:.0%} of "
                     f"{row.consensus_compared} answers (above {thresholds.max_consensus_disagreement:.0%})")
    return tuple(flags)


@dataclass(frozen=True)
class Agreement:
    """Inter-evaluator agreement on one task type."""

    task_type: str
    level: str  # nominal | ordinal
    alpha: float | None
    units: int  # units answered by at least two evaluators
    mean_kappa: float | None
    kappas: dict[tuple[int, int], float] = field(default_factory=dict)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _agreements(facts: Sequence[JudgementFacts], min_shared: int) -> dict[str, Agreement]:
    result = {}
    for task_type, level in LEVELS.items():
        votes = [vote for fact in facts if fact.task_type == task_type for vote in agreement_votes(fact)]
        if votes:
            alpha, units = krippendorff_alpha(votes, level)
            kappas = pairwise_kappas(votes, level, min_shared)
            result[task_type] = Agreement(task_type, level, alpha, units, _mean(list(kappas.values())), kappas)
    return result


def _evaluator_row(
    evaluator: int, facts: Sequence[JudgementFacts], username: str, min_ms: float, consensus: tuple[int, int],
    kappas: Sequence[float], thresholds: QualityThresholds,
) -> EvaluatorQuality:
    verdicts = [v for v in (gold_verdict(f, thresholds.rating_tolerance) for f in facts) if v is not None]
    timed = [f.duration_ms for f in facts if f.duration_ms is not None]
    row = EvaluatorQuality(
        evaluator_id=evaluator, username=username, judgements=len(facts),
        gold_answers=len(verdicts), gold_correct=sum(verdicts), position=_position_bias(facts),
        timed_answers=len(timed), fast_answers=sum(duration < min_ms for duration in timed),
        consensus_compared=consensus[0], consensus_differing=consensus[1],
        mean_kappa=_mean(kappas), kappa_pairs=len(kappas),
    )
    return replace(row, weight=quality_weight(row.gold_correct, row.gold_answers, row.fast_share,
                                              thresholds.gold_prior_answers))


def with_family_adjusted_position_tests(rows: list[EvaluatorQuality], min_answers: int) -> list[EvaluatorQuality]:
    """The rows with their position-bias p-values Holm-adjusted over every evaluator who gave
    at least `min_answers` decided pairwise answers (the ones the check tests)."""
    tested = [i for i, row in enumerate(rows) if row.position.answers >= min_answers]
    rows = list(rows)
    for index, adjusted in zip(tested, holm_adjusted([rows[i].position.p_value for i in tested])):
        rows[index] = replace(rows[index], position=replace(rows[index].position, adjusted_p=adjusted,
                                                            family=len(tested)))
    return rows


def assess(
    facts: Sequence[JudgementFacts], min_seconds: float, thresholds: QualityThresholds | None = None,
    usernames: Mapping[int, str] | None = None,
) -> tuple[dict[str, Agreement], list[EvaluatorQuality]]:
    """Agreement per task type and one row per evaluator (by id), from plain judgements."""
    thresholds = thresholds or QualityThresholds()
    usernames = usernames or {}
    agreements = _agreements(facts, thresholds.min_shared_items)
    consensus = consensus_counts(
        [vote for fact in facts for vote in consensus_votes(fact)], thresholds.rating_tolerance
    )
    kappas_of: dict[int, list[float]] = defaultdict(list)
    for agreement in agreements.values():
        for pair, kappa in agreement.kappas.items():
            for evaluator in pair:
                kappas_of[evaluator].append(kappa)
    by_evaluator: dict[int, list[JudgementFacts]] = defaultdict(list)
    for fact in facts:
        by_evaluator[fact.evaluator_id].append(fact)
    rows = [
        _evaluator_row(evaluator, own, usernames.get(evaluator, str(evaluator)), min_seconds * 1000,
                       consensus.get(evaluator, (0, 0)), kappas_of[evaluator], thresholds)
        for evaluator, own in sorted(by_evaluator.items())
    ]
    rows = with_family_adjusted_position_tests(rows, thresholds.min_pairwise_answers)
    return agreements, [replace(row, flags=evaluator_flags(row, thresholds)) for row in rows]


# ---------------------------------------------------------------- per campaign, from the database


@dataclass(frozen=True)
class CampaignQuality:
    """What the admin dashboard shows for a campaign."""

    campaign_id: int
    campaign_name: str
    judgements: int
    agreement: dict[str, Agreement]
    evaluators: list[EvaluatorQuality]
    thresholds: QualityThresholds

    @property
    def gold_accuracy(self) -> float | None:
        return _share(sum(r.gold_correct for r in self.evaluators), sum(r.gold_answers for r in self.evaluators))

    @property
    def position(self) -> PositionBias:
        return PositionBias(sum(r.position.first_shown for r in self.evaluators),
                            sum(r.position.answers for r in self.evaluators))

    @property
    def fast_share(self) -> float | None:
        return _share(sum(r.fast_answers for r in self.evaluators), sum(r.timed_answers for r in self.evaluators))

    @property
    def flagged(self) -> list[EvaluatorQuality]:
        return [row for row in self.evaluators if row.flagged]

    def weights(self) -> dict[int, float]:
        return {row.evaluator_id: row.weight for row in self.evaluators}


def load_judgement_facts(session: Session, campaign_id: int) -> list[JudgementFacts]:
    """Every judgement of a campaign, oldest first, with its item's gold answer."""
    rows = session.execute(
        select(Judgement, Item.is_gold, Item.gold).join(Item, Judgement.item_id == Item.id)
        .where(Judgement.campaign_id == campaign_id).order_by(Judgement.id)
    )
    return [
        JudgementFacts(
            judgement_id=j.id, item_id=j.item_id, evaluator_id=j.evaluator_id, task_type=j.task_type.value,
            answer=j.answer, shown_order=tuple(j.shown_order), duration_ms=j.duration_ms,
            gold=gold if is_gold else None,
        )
        for j, is_gold, gold in rows
    ]


def campaign_report(session: Session, campaign_id: int, thresholds: QualityThresholds | None = None) -> CampaignQuality:
    """Quality of one campaign: agreement per task type, and every evaluator's numbers and flags."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign with id {campaign_id}")
    thresholds = thresholds or QualityThresholds()
    facts = load_judgement_facts(session, campaign_id)
    evaluator_ids = {fact.evaluator_id for fact in facts}
    usernames = dict(session.execute(select(User.id, User.username).where(User.id.in_(evaluator_ids))).all())
    agreement, rows = assess(facts, campaign.min_seconds, thresholds, usernames)
    return CampaignQuality(campaign.id, campaign.name, len(facts), agreement, rows, thresholds)
