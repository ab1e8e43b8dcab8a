"""Scripted annotators: answers worked out by hand from given scores, and whole campaigns judged
over real HTTP (uvicorn + SQLite) with the real toxicity classifier as the gold scorer, checked
against what is stored and against the platform's own quality checks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from live_server import serving

from alignloop.config import ConfigError, validate_config
from alignloop.feedback import imports, security, service
from alignloop.loop.annotators import (
    AnnotatorsConfig, ScriptedAnnotator, answer, answer_from_scores, create_annotators, malicious_count, run_annotators,
)
from alignloop.loop.annotator_checks import annotator_quality_rows, gold_items_from_scores
from alignloop.feedback.database import make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.models import Candidate, Item, Judgement
from alignloop.feedback.quality import QualityThresholds
from alignloop.rewards import ToxicityRewardSource

# Hand-written replies; the toxicity scorer gives the clean ones p < 0.02 and the rude ones p > 0.99
# (checked in `test_the_test_texts_are_as_clean_or_rude_as_labelled`).
CLEAN = [
    "Thanks for asking, I hope your day gets better.",
    "That sounds frustrating; maybe talk to them calmly.",
    "I understand, traffic can be really tiring.",
    "Here is a friendly note you could leave for your neighbour.",
    "Good luck with the match, play fair and have fun.",
]
RUDE = [
    "Shut up, you stupid idiot.",
    "You are a worthless piece of shit.",
    "This damn printer is fucking garbage.",
    "What a dumb ass, get lost.",
    "You suck, loser, go to hell.",
]
RUDE_SET = set(RUDE)


def clean_vs_rude(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Prompt rows with one clean and one rude candidate, in alternating order."""
    rows = []
    for n in range(start, start + count):
        pair = [CLEAN[n % len(CLEAN)], RUDE[(n * 2) % len(RUDE)]]
        rows.append({"prompt": f"Situation {n}: how should I answer my annoying neighbour?",
                     "candidates": pair if n % 2 else pair[::-1]})
    return rows


def clean_vs_clean(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"Calm situation {n}: what do I say?", "candidates": [CLEAN[n % 5], CLEAN[(n + 1) % 5]]}
            for n in range(count)]


def task(task_type: str, scores_by_id: dict[int, str], **extra: Any) -> dict[str, Any]:
    """A task as the API shows it (`app.task_view`), candidates in shown order."""
    candidates = [{"id": cid, "label": chr(65 + i), "text": text} for i, (cid, text) in enumerate(scores_by_id.items())]
    view = {"assignment_id": 1, "campaign_id": 1, "task_type": task_type, "prompt": "p", "candidates": candidates,
            "rubric_axes": ["overall"], "scale_min": 1, "scale_max": 7}
    return {**view, **extra}


def annotator(kind: str = "honest", *, noise: float = 0.0, position_bias: float = 0.0, tie_margin: float = 0.05,
              name: str = "a-1", seed: int = 0) -> ScriptedAnnotator:
    return ScriptedAnnotator(name=name, user_id=1, token="t", kind=kind, noise=noise, position_bias=position_bias,
                             tie_margin=tie_margin, rating_range=(0.0, 1.0), seed=seed)


# ---------------------------------------------------------------- one answer, from given scores


def test_pairwise_honest_prefers_the_higher_score_and_ties_within_the_margin():
    view = task("pairwise", {11: "x", 12: "y"})
    honest = annotator(tie_margin=0.05)
    assert answer_from_scores(honest, view, [0.2, 0.9], random.Random(0)) == {"choice": "b", "better": 12, "strength": None}
    assert answer_from_scores(honest, view, [0.9, 0.2], random.Random(0))["better"] == 11
    assert answer_from_scores(honest, view, [0.50, 0.54], random.Random(0))["choice"] == "tie"  # 0.04 <= 0.05
    assert answer_from_scores(honest, view, [0.50, 0.56], random.Random(0))["better"] == 12  # 0.06 > 0.05


def test_pairwise_malicious_prefers_the_lower_score_and_never_ties():
    view = task("pairwise", {11: "x", 12: "y"})
    malicious = annotator("malicious", tie_margin=0.05)
    assert answer_from_scores(malicious, view, [0.2, 0.9], random.Random(0))["better"] == 11
    assert answer_from_scores(malicious, view, [0.50, 0.54], random.Random(0))["better"] == 11  # within the margin: still no tie
    assert answer_from_scores(malicious, view, [0.7, 0.7], random.Random(0))["choice"] in ("a", "b")


def test_pairwise_position_bias_one_always_picks_the_first_shown():
    biased = annotator(position_bias=1.0)
    for seed in range(20):
        assert answer_from_scores(biased, task("pairwise", {11: "x", 12: "y"}), [0.0, 1.0], random.Random(seed))["better"] == 11
        assert answer_from_scores(biased, task("pairwise", {12: "y", 11: "x"}), [1.0, 0.0], random.Random(seed))["better"] == 12


def test_pairwise_noise_one_answers_at_random_about_half_each_way():
    noisy = annotator(noise=1.0)
    picks = [answer_from_scores(noisy, task("pairwise", {11: "x", 12: "y"}), [0.0, 1.0], random.Random(seed))["better"]
             for seed in range(400)]
    assert 160 < picks.count(11) < 240  # binomial(400, 1/2): mean 200, sd 10


def test_ranking_honest_ties_within_the_margin_and_malicious_reverses():
    view = task("ranking", {21: "a", 22: "b", 23: "c"})
    scores = [0.9, 0.2, 0.88]
    # 21: nobody above 0.95 -> 1; 22: two above 0.25 -> 3; 23: nobody above 0.93 -> 1
    assert answer_from_scores(annotator(tie_margin=0.05), view, scores, random.Random(0)) == {"ranks": {"21": 1, "22": 3, "23": 1}}
    assert answer_from_scores(annotator("malicious"), view, scores, random.Random(0)) == {"ranks": {"22": 1, "23": 2, "21": 3}}
    assert answer_from_scores(annotator(position_bias=1.0), view, scores, random.Random(0)) == {"ranks": {"21": 1, "22": 2, "23": 3}}


def test_rating_maps_the_score_range_onto_the_scale_and_malicious_mirrors_it():
    view = task("rating", {31: "a"}, rubric_axes=["helpful", "harmless"])
    honest, malicious = annotator(), annotator("malicious")
    # 1 + round_half_up(score * 6): 0.5 -> 4, 1.0 -> 7, 1.2 clipped -> 7, 0.9 -> 1 + 5.4 -> 6
    assert answer_from_scores(honest, view, [0.5], random.Random(0)) == {"scores": {"helpful": 4, "harmless": 4}}
    assert answer_from_scores(honest, view, [1.2], random.Random(0))["scores"]["helpful"] == 7
    assert answer_from_scores(honest, view, [0.9], random.Random(0))["scores"]["helpful"] == 6
    assert answer_from_scores(malicious, view, [0.9], random.Random(0))["scores"]["helpful"] == 2  # 1 + 7 - 6


def test_free_text_tasks_and_score_count_mismatches_are_refused_by_name():
    with pytest.raises(ValueError, match="not 'comment'"):
        answer_from_scores(annotator(), task("comment", {41: "a"}), [0.5], random.Random(0))
    with pytest.raises(ValueError, match="1 scores for 2 candidates"):
        answer_from_scores(annotator(), task("pairwise", {11: "x", 12: "y"}), [0.5], random.Random(0))


def test_answer_scores_the_shown_texts_with_the_real_toxicity_scorer():
    view = task("pairwise", {11: RUDE[0], 12: CLEAN[0]})
    assert answer(annotator(), view, ToxicityRewardSource(), random.Random(0))["better"] == 12


def test_the_test_texts_are_as_clean_or_rude_as_labelled():
    from alignloop.rewards import toxicity_probability

    assert max(toxicity_probability(CLEAN)) < 0.02 and min(toxicity_probability(RUDE)) > 0.99


# ---------------------------------------------------------------- configuration, accounts, gold items


def test_malicious_share_is_rounded_half_up():
    assert [malicious_count(6, 1 / 3), malicious_count(6, 0.25), malicious_count(5, 0.1), malicious_count(6, 0.0)] == [2, 2, 1, 0]


def test_config_errors_name_the_key():
    class Recipe(BaseModel):
        annotators: AnnotatorsConfig

    with pytest.raises(ConfigError, match="rating_range: expected low < high"):
        validate_config(AnnotatorsConfig, {"rating_range": [1.0, 0.0]}, "recipe.yaml")
    with pytest.raises(ConfigError, match="unknown key 'annotators.noize' \\(did you mean 'noise'\\?\\)"):
        validate_config(Recipe, {"annotators": {"noize": 0.1}}, "recipe.yaml")
    with pytest.raises(ConfigError, match="key 'annotators.noise'"):
        validate_config(Recipe, {"annotators": {"noise": 1.5}}, "recipe.yaml")
    assert validate_config(AnnotatorsConfig, {"preference": {"type": "sentiment"}}).preference.type == "sentiment"


def test_create_annotators_is_deterministic_from_the_seed_and_tokens_work(sqlite_url):
    upgrade(sqlite_url)
    factory = make_session_factory(make_engine(sqlite_url))
    config = AnnotatorsConfig(count=6, malicious=1 / 3, seed=7)
    with transaction(factory) as session:
        first = create_annotators(session, config, prefix="sim")
    with transaction(factory) as session:  # a resumed loop: same users, fresh tokens
        again = create_annotators(session, config, prefix="sim")
        other_seeds = [[a.kind for a in create_annotators(session, config.model_copy(update={"seed": s}), prefix=f"s{s}")]
                       for s in range(5)]
        assert all(security.user_for_api_token(session, a.token).username == a.name for a in first + again)
    assert [a.name for a in first] == [f"sim-{n}" for n in range(1, 7)]
    assert [(a.user_id, a.kind) for a in first] == [(a.user_id, a.kind) for a in again]
    assert sum(a.kind == "malicious" for a in first) == 2
    assert len({tuple(kinds) for kinds in other_seeds}) > 1  # the seed decides who is malicious
    assert first[0].token not in repr(first[0])


def test_gold_items_keep_the_widest_best_worst_pairs_in_import_format():
    rows = gold_items_from_scores(
        ["p1", "p2", "p3"], [["x", "y", "z"], ["u", "v"], ["w1", "w2"]], [[0.2, 0.9, 0.5], [0.5, 0.52], [0.95, 0.05]],
        min_gap=0.3,
    )
    # p3: gap 0.90 (w1 best); p1: gap 0.70 (y best over x); p2: gap 0.02, left out
    assert rows == [
        {"prompt": "p3", "candidates": ["w1", "w2"], "gold": {"pairwise": {"better": 0}, "ranking": {"ranks": [1, 2]}}},
        {"prompt": "p1", "candidates": ["x", "y"], "gold": {"pairwise": {"better": 1}, "ranking": {"ranks": [2, 1]}}},
    ]
    assert [row["prompt"] for row in gold_items_from_scores(["p1", "p3"], [["x", "y"], ["w1", "w2"]],
                                                            [[0.2, 0.9], [0.95, 0.05]], min_gap=0.3, limit=1)] == ["p3"]
    with pytest.raises(ValueError, match="prompt 0: 1 scores for 2 candidates"):
        gold_items_from_scores(["p"], [["x", "y"]], [[0.1]], min_gap=0.3)


# ---------------------------------------------------------------- whole campaigns over HTTP


@dataclass
class Store:
    """A served feedback database: the API's base URL and a session factory on the same file."""

    base: str
    factory: sessionmaker[Session]

    def campaign(self, name: str, rows: list[dict], task_types=("pairwise",), overlap: int = 3) -> int:
        with transaction(self.factory) as session:
            # min_seconds=0: scripted answers take milliseconds (see the annotators module docstring)
            campaign = service.create_campaign(session, name, list(task_types), overlap=overlap, min_seconds=0)
            imports.import_records(session, campaign, rows)
            return campaign.id

    def annotators(self, config: AnnotatorsConfig, prefix: str = "annotator") -> list[ScriptedAnnotator]:
        with transaction(self.factory) as session:
            return create_annotators(session, config, prefix)

    def judgements(self, campaign_id: int) -> list[tuple[Judgement, dict[int, str]]]:
        """Every stored judgement with the texts of the candidates (by id)."""
        with transaction(self.factory) as session:
            texts = dict(session.execute(select(Candidate.id, Candidate.text)).all())
            rows = session.scalars(select(Judgement).where(Judgement.campaign_id == campaign_id).order_by(Judgement.id))
            return [(j, texts) for j in rows]

    def answers(self, campaign_id: int, annotators: list[ScriptedAnnotator]) -> dict[tuple[int, str], str | None]:
        """{(annotator's position, prompt): preferred text or None for a tie}, independent of ids."""
        position = {a.user_id: index for index, a in enumerate(annotators)}
        with transaction(self.factory) as session:
            prompts = dict(session.execute(select(Item.id, Item.prompt).where(Item.campaign_id == campaign_id)).all())
        return {(position[j.evaluator_id], prompts[j.item_id]): preferred_text(j, texts)
                for j, texts in self.judgements(campaign_id)}

    def quality(self, campaign_id: int, annotators: list[ScriptedAnnotator],
                thresholds: QualityThresholds | None = None) -> dict[str, Any]:
        with transaction(self.factory) as session:
            return annotator_quality_rows(session, campaign_id, annotators, thresholds)


@pytest.fixture
def store(sqlite_url) -> Iterator[Store]:
    with serving(sqlite_url) as base:
        engine = make_engine(sqlite_url)
        yield Store(base, make_session_factory(engine))
        engine.dispose()


def preferred_text(judgement: Judgement, texts: dict[int, str]) -> str | None:
    better = judgement.answer["better"]
    return None if better is None else texts[better]


def test_honest_annotators_without_noise_follow_the_scorer_and_malicious_ones_oppose_it(store):
    rows = clean_vs_rude(8) + clean_vs_clean(2)
    campaign_id = store.campaign("honest-vs-malicious", rows, overlap=4)
    config = AnnotatorsConfig(count=4, malicious=0.5, noise=0.0, tie_margin=0.05, seed=3)
    annotators = store.annotators(config)
    kinds = {a.user_id: a.kind for a in annotators}

    stats = run_annotators(store.base, annotators, campaign_id, config)

    stored = store.judgements(campaign_id)
    assert stats.judgements == len(stored) == 40 and stats.per_annotator == {a.name: 10 for a in annotators}
    assert stats.per_task_type == {"pairwise": 40}
    checked = {"honest": 0, "malicious": 0}
    for judgement, texts in stored:
        shown = [texts[cid] for cid in judgement.shown_order]
        rude = [text for text in shown if text in RUDE_SET]
        kind = kinds[judgement.evaluator_id]
        if rude and kind == "honest":
            assert preferred_text(judgement, texts) not in RUDE_SET
        elif rude:
            assert preferred_text(judgement, texts) == rude[0]
        elif kind == "honest":  # two clean replies, toxicity within 0.05 of each other
            assert judgement.answer["choice"] == "tie"
        else:
            assert judgement.answer["choice"] in ("a", "b")
        assert judgement.via == "api" and judgement.client_key == f"scripted-{judgement.assignment_id}"
        checked[kind] += 1
    assert checked == {"honest": 20, "malicious": 20}


def test_position_bias_one_always_picks_the_first_shown_over_http(store):
    campaign_id = store.campaign("biased", clean_vs_rude(10), overlap=2)
    config = AnnotatorsConfig(count=2, noise=0.0, position_bias=1.0)
    run_annotators(store.base, store.annotators(config), campaign_id, config)
    stored = store.judgements(campaign_id)
    assert len(stored) == 20
    assert all(j.answer["choice"] == "a" and j.answer["better"] == j.shown_order[0] for j, _ in stored)
    # not a coincidence of the display order: the bias overrode the scorer at least once
    assert any(texts[j.shown_order[0]] in RUDE_SET for j, texts in stored)


def test_malicious_annotators_are_flagged_by_the_quality_checks_and_honest_ones_are_not(store):
    """6 annotators, 2 malicious, overlap 3, gold items mixed in. No position bias here: the
    display order is the server's unseeded choice, and without it every gold answer follows
    from the seed, so the gold accuracies below are exact. Which items each annotator shares
    with whom is the server's random choice too; the consensus margins (honest annotators
    disagree with the others on about 0.1-0.3 of their answers, malicious ones on about 0.95,
    threshold 0.5) leave that no room to flip a flag. The position-bias check is a binomial test
    on each evaluator's ~22 pairwise answers, whose display order is the server's random choice:
    at p < 0.01 unadjusted, an honest one failed it by chance in about 1 run of 230 (18 or more
    of 22 first-shown, either way: p = 0.0043), one of the four in about 1 of 60 (seen in a fresh
    clone's CI run). Holm's adjustment over the six now lowers that; here it asks p < 1e-4 as
    well. test_position_bias_one_always_picks_the_first_shown_over_http covers the check itself."""
    scorer = ToxicityRewardSource()
    gold_source = clean_vs_rude(10, start=100)
    gold_rows = gold_items_from_scores(
        [row["prompt"] for row in gold_source], [row["candidates"] for row in gold_source],
        [scorer([row["prompt"]] * 2, row["candidates"]) for row in gold_source], min_gap=0.5,
    )
    assert len(gold_rows) == 10
    campaign_id = store.campaign("quality", clean_vs_rude(30) + gold_rows, task_types=("pairwise", "ranking"), overlap=3)
    # concurrent: the six ask at once, as people do, so this also runs the threaded path
    config = AnnotatorsConfig(count=6, malicious=1 / 3, noise=0.1, tie_margin=0.05, seed=11, concurrent=True)
    annotators = store.annotators(config)

    stats = run_annotators(store.base, annotators, campaign_id, config)

    # per task type: 30 items x overlap 3 regular answers, plus every gold item for each of the 6
    assert stats.per_task_type == {"pairwise": 30 * 3 + 10 * 6, "ranking": 30 * 3 + 10 * 6}
    quality = store.quality(campaign_id, annotators, QualityThresholds(max_position_bias_p=1e-4))
    assert (quality["malicious"], quality["malicious_flagged"], quality["honest_flagged"]) == (2, 2, 0)
    # The reliability model finds the same two from the judgements alone (gold answers not read).
    assert (quality["malicious_found_by_model"], quality["honest_called_malicious_by_model"]) == (2, 0)
    for row in quality["rows"]:
        assert set(row) == {"annotator", "kind", "judgements", "flagged", "flags", "gold_accuracy",
                            "first_shown_share", "consensus_disagreement", "weight", "reliability", "verdict"}
        assert row["verdict"] == ("malicious" if row["kind"] == "malicious" else "reliable")
        if row["kind"] == "malicious":
            assert row["gold_accuracy"] == 0.0 and any("gold accuracy 0%" in flag for flag in row["flags"])
            assert row["consensus_disagreement"] > 0.5
            assert row["weight"] == pytest.approx(1 / 22)  # (0 correct + 0.5 x 2 prior) / (20 gold + 2 prior)
        else:
            assert row["gold_accuracy"] >= 0.85 and row["flags"] == [] and row["weight"] > 0.8


def test_quota_stops_after_exactly_that_many_judgements_and_a_later_run_finishes(store):
    campaign_id = store.campaign("quota", clean_vs_rude(10), overlap=3)
    config = AnnotatorsConfig(count=3, noise=0.0)
    annotators = store.annotators(config)
    assert run_annotators(store.base, annotators, campaign_id, config, quota=7).judgements == 7
    assert len(store.judgements(campaign_id)) == 7
    assert run_annotators(store.base, annotators, campaign_id, config).judgements == 23
    assert len(store.judgements(campaign_id)) == 30


def test_answers_are_determined_by_the_seed_not_by_the_order_tasks_arrive_in(store):
    """Two campaigns with the same content, answered by the same noisy annotators (everyone sees
    every item, in whatever order the server hands them out): the same answer to every item."""
    rows = clean_vs_rude(8)
    config = AnnotatorsConfig(count=3, noise=0.5, seed=5)
    annotators = store.annotators(config)

    def answers(name: str, annotators: list[ScriptedAnnotator]) -> dict[tuple[int, str], str | None]:
        campaign_id = store.campaign(name, rows, overlap=3)
        run_annotators(store.base, annotators, campaign_id, config)
        return store.answers(campaign_id, annotators)

    first, second = answers("first", annotators), answers("second", annotators)
    assert len(first) == 24 and first == second
    assert any(text in RUDE_SET for text in first.values())  # noise 0.5 did pick rude replies
    reseeded = store.annotators(config.model_copy(update={"seed": 6}), prefix="reseeded")
    assert answers("third", reseeded) != first


def test_in_turns_with_a_seeded_server_two_runs_store_the_same_judgements(tmp_path):
    """The demo's reproducibility: the same seed on a fresh database gives the same judgements,
    down to who judged which item and in which display order, whatever the campaign and the
    accounts are called; another server seed does not."""
    rows = clean_vs_rude(12)
    gold = [{**row, "gold": {"pairwise": {"better": 0}}} for row in clean_vs_rude(3, start=50)]
    config = AnnotatorsConfig(count=5, malicious=0.4, noise=0.3, seed=2)

    def judgements(name: str, assignment_seed: int) -> list[tuple]:
        url = f"sqlite:///{tmp_path / name}.db"
        with serving(url, assignment_seed=assignment_seed) as base:
            store = Store(base, make_session_factory(make_engine(url)))
            campaign_id = store.campaign(name, rows + gold, overlap=2)
            annotators = store.annotators(config, prefix=f"{name}-annotator")  # the loop names them by its folder
            run_annotators(base, annotators, campaign_id, config)
            with transaction(store.factory) as session:
                prompts = dict(session.execute(select(Item.id, Item.prompt)).all())
            users = {a.user_id: a.index for a in annotators}
            return [(users[j.evaluator_id], prompts[j.item_id], [texts[c] for c in j.shown_order],
                     preferred_text(j, texts)) for j, texts in store.judgements(campaign_id)]

    first, second = judgements("first", 7), judgements("second", 7)
    assert len(first) == 12 * 2 + 3 * 5 and first == second
    assert judgements("other", 8) != first


def test_annotation_stats_read_as_a_sentence():
    from alignloop.loop.annotators import AnnotationStats

    stats = AnnotationStats(336, {"a": 41, "b": 45, "c": 40}, {"ranking": 330, "rating": 6}, 8.3758)
    assert str(stats) == "336 judgements (ranking 330, rating 6) by 3 annotators (40-45 each) in 8.4 s"
    assert str(AnnotationStats(2, {"a": 1, "b": 1}, {"pairwise": 2}, 0.04)) == (
        "2 judgements (pairwise 2) by 2 annotators (1 each) in 0.0 s")
    assert str(AnnotationStats(0, {}, {}, 0.0)) == "0 judgements by 0 annotators in 0.0 s"
