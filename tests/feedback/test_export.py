"""Exports: records built from judgements by hand-checkable rules, read back by the trainers' own
readers, versioned folders whose manifest hashes the data file."""

from __future__ import annotations

import math
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from alignloop.data import (
    BinaryFeedback,
    DataConfig,
    Message,
    PreferenceDataConfig,
    PreferencePair,
    Ranking,
    Rating,
    SFTExample,
    preference_fingerprint,
    read_preference_data,
    read_train_and_eval,
)
from alignloop.feedback.export import ExportError, export_campaign, export_campaign_from_url
from alignloop.feedback.models import (
    Assignment,
    AssignmentStatus,
    Base,
    Campaign,
    Candidate,
    Item,
    Judgement,
    Role,
    TaskType,
    User,
)


def as_chat(text: str) -> list[Message]:
    """A string prompt as exports write it (TRL's conversational format): one user message."""
    return [Message(role="user", content=text)]


class CampaignBuilder:
    """Inserts users, items and judgements directly, as the server would have stored them."""

    def __init__(self, session: Session, name: str = "demo", **campaign_fields):
        self.session = session
        self.campaign = Campaign(name=name, task_types=["pairwise", "ranking", "rating", "edit"],
                                 rubric_axes=["helpful", "honest"], **campaign_fields)
        session.add(self.campaign)
        session.flush()

    def user(self, name: str) -> int:
        user = User(username=name, role=Role.evaluator, password_hash="x")
        self.session.add(user)
        self.session.flush()
        return user.id

    def item(self, prompt, *texts: str) -> tuple[int, list[int]]:
        item = Item(campaign_id=self.campaign.id, prompt=prompt, candidates=[Candidate(text=text) for text in texts])
        self.session.add(item)
        self.session.flush()
        return item.id, [candidate.id for candidate in item.candidates]

    def gold_pair(self, prompt: str, right: str, wrong: str) -> tuple[int, int, int]:
        """A gold item whose known answer is that `right` is better than `wrong`."""
        item, (right_id, wrong_id) = self.item(prompt, right, wrong)
        self.session.get(Item, item).is_gold = True
        self.session.get(Item, item).gold = {"pairwise": {"better": right_id}}
        return item, right_id, wrong_id

    def judge(self, evaluator: int, item: int, task: str, answer: dict, shown: list[int], duration_ms: int = 9000):
        assignment = Assignment(campaign_id=self.campaign.id, item_id=item, evaluator_id=evaluator,
                                task_type=TaskType(task), shown_order=shown, status=AssignmentStatus.done)
        self.session.add(assignment)
        self.session.flush()
        self.session.add(Judgement(
            assignment_id=assignment.id, campaign_id=self.campaign.id, item_id=item, evaluator_id=evaluator,
            task_type=TaskType(task), answer=answer, shown_order=shown, duration_ms=duration_ms,
        ))

    def prefer(self, evaluator: int, item: int, shown: list[int], better: int | str) -> None:
        """A pairwise answer; `better` is a candidate id or "tie" / "both_bad"."""
        if better in ("tie", "both_bad"):
            answer = {"choice": better, "better": None, "strength": None}
        else:
            answer = {"choice": "a" if better == shown[0] else "b", "better": better, "strength": 2}
        self.judge(evaluator, item, "pairwise", answer, shown)


@pytest.fixture
def session(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'feedback.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def read_pairs(path: Path) -> list[PreferencePair]:
    """What the reward-model and DPO trainers read from `data.train`."""
    return read_preference_data(PreferenceDataConfig(train=[path], on_invalid="error")).train.pairs


def manifest_of(result) -> dict:
    return json.loads((result.path / "manifest.json").read_text())


# ---------------------------------------------------------------- pairs


def test_pairs_round_trip_through_the_trainers_reader(db_url, tmp_path):
    """Every judgement becomes a pair by the candidate preferred, whatever side it was shown on;
    ties, both-bad and gold items are dropped and counted; the file reads back as it is."""
    engine = create_engine(db_url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        build = CampaignBuilder(session)
        ann, bob = build.user("ann"), build.user("bob")
        item, (good, bad) = build.item("Say hi <script>alert(1)</script>", "Hi there!", "Go away.")
        build.prefer(ann, item, [good, bad], good)
        build.prefer(bob, item, [bad, good], good)  # same candidate, other screen position
        chat, (first, second) = build.item([{"role": "user", "content": "2+2?"}], "4", "5")
        build.prefer(ann, chat, [second, first], "tie")
        build.prefer(bob, chat, [first, second], "both_bad")
        gold, right, wrong = build.gold_pair("gold prompt", "right", "wrong")
        build.prefer(ann, gold, [right, wrong], right)
        session.commit()
        result = export_campaign(session, "demo", "pairs", tmp_path / "out")
    engine.dispose()

    pairs = read_pairs(result.data_file)
    expected = PreferencePair(prompt=as_chat("Say hi <script>alert(1)</script>"), chosen="Hi there!", rejected="Go away.")
    assert pairs == [expected, expected]
    assert result.path == tmp_path / "out" / "demo-pairs-v1"
    assert result.dropped == {"both_bad": 1, "gold_item": 1, "tie": 1}
    manifest = manifest_of(result)
    assert manifest["records"] == 2 and manifest["dropped"] == result.dropped
    assert manifest["sha256"] == hashlib.sha256(result.data_file.read_bytes()).hexdigest()
    assert manifest["fingerprint"] == preference_fingerprint(read_preference_data(
        PreferenceDataConfig(train=[result.data_file])).train)
    assert manifest["evaluators"] == {"included": ["ann", "bob"], "excluded": {}}
    assert (manifest["campaign"], manifest["format"], manifest["aggregation"]) == ("demo", "pairs", "all")


def three_voter_campaign(build: CampaignBuilder) -> dict[str, int]:
    """Units with votes (A, A, B), (A, B) and (tie, tie, A), by ann, bob and cat."""
    ann, bob, cat = build.user("ann"), build.user("bob"), build.user("cat")
    clear, (a1, b1) = build.item("clear", "A1", "B1")
    build.prefer(ann, clear, [a1, b1], a1)
    build.prefer(bob, clear, [b1, a1], a1)
    build.prefer(cat, clear, [a1, b1], b1)
    split, (a2, b2) = build.item("split", "A2", "B2")
    build.prefer(ann, split, [a2, b2], a2)
    build.prefer(bob, split, [a2, b2], b2)
    tied, (a3, b3) = build.item("tied", "A3", "B3")
    build.prefer(ann, tied, [a3, b3], "tie")
    build.prefer(bob, tied, [b3, a3], "tie")
    build.prefer(cat, tied, [a3, b3], a3)
    return {"ann": ann, "bob": bob, "cat": cat}


def test_majority_keeps_one_pair_per_unit_and_counts_ties(session, tmp_path):
    three_voter_campaign(CampaignBuilder(session))
    session.commit()
    result = export_campaign(session, "demo", "pairs", tmp_path, aggregation="majority")
    assert read_pairs(result.data_file) == [PreferencePair(prompt=as_chat("clear"), chosen="A1", rejected="B1")]
    assert result.dropped == {"no_majority": 1, "tie": 1}


def add_gold_record(build: CampaignBuilder, evaluators: dict[str, int], correct: set[str], count: int = 3) -> None:
    """`count` gold items answered by everyone; those in `correct` answer them right."""
    for index in range(count):
        gold_item, right, wrong = build.gold_pair(f"gold {index}", f"right {index}", f"wrong {index}")
        for name, evaluator in evaluators.items():
            build.prefer(evaluator, gold_item, [right, wrong], right if name in correct else wrong)


def test_weighted_export_lets_a_trusted_evaluator_outvote_two_unreliable_ones(session, tmp_path):
    """Weights (gold accuracy shrunk by 2 pseudo-answers at 0.5): ann 3/3 -> (3+1)/(3+2) = 0.8,
    bob and cat 0/3 -> 1/5 = 0.2 each. On a unit where ann says A and both others say B, A has
    0.8 against 0.4: A wins with margin (0.8 - 0.4) / 1.2 = 1/3; a plain majority picks B."""
    build = CampaignBuilder(session)
    evaluators = {name: build.user(name) for name in ("ann", "bob", "cat")}
    item, (a, b) = build.item("contested", "A", "B")
    build.prefer(evaluators["ann"], item, [a, b], a)
    build.prefer(evaluators["bob"], item, [a, b], b)
    build.prefer(evaluators["cat"], item, [b, a], b)
    add_gold_record(build, evaluators, correct={"ann"})
    session.commit()

    majority = export_campaign(session, "demo", "pairs", tmp_path, aggregation="majority")
    assert read_pairs(majority.data_file) == [PreferencePair(prompt=as_chat("contested"), chosen="B", rejected="A")]
    weighted = export_campaign(session, "demo", "pairs", tmp_path, aggregation="weighted")
    [pair] = read_pairs(weighted.data_file)
    assert (pair.chosen, pair.rejected) == ("A", "B")
    assert pair.margin == pytest.approx(1 / 3)
    assert manifest_of(weighted)["weights"] == pytest.approx({"ann": 0.8, "bob": 0.2, "cat": 0.2})
    assert weighted.dropped == {"gold_item": 9}


def test_excluding_flagged_evaluators_names_them_and_their_reasons(session, tmp_path):
    build = CampaignBuilder(session)
    evaluators = {name: build.user(name) for name in ("ann", "bob", "cat")}
    item, (a, b) = build.item("contested", "A", "B")
    build.prefer(evaluators["ann"], item, [a, b], a)
    build.prefer(evaluators["bob"], item, [a, b], b)
    build.prefer(evaluators["cat"], item, [b, a], b)
    add_gold_record(build, evaluators, correct={"ann"})
    session.commit()
    result = export_campaign(session, "demo", "pairs", tmp_path, aggregation="majority", exclude_flagged=True)
    assert read_pairs(result.data_file) == [PreferencePair(prompt=as_chat("contested"), chosen="A", rejected="B")]
    excluded = manifest_of(result)["evaluators"]["excluded"]
    assert sorted(excluded) == ["bob", "cat"]
    assert excluded["bob"] == ["gold accuracy 0% on 3 gold answers (below 60%)"]
    assert manifest_of(result)["evaluators"]["included"] == ["ann"]
    assert result.dropped == {"flagged_evaluator": 2, "gold_item": 9}


# ---------------------------------------------------------------- versions and atomicity


def test_each_export_is_a_new_version_with_its_own_manifest(session, tmp_path):
    three_voter_campaign(CampaignBuilder(session, name="round 1/alpha"))
    session.commit()
    out = tmp_path / "out"
    first = export_campaign(session, "round 1/alpha", "pairs", out)
    second = export_campaign(session, "round 1/alpha", "pairs", out, aggregation="majority")
    assert (first.path.name, second.path.name) == ("round-1-alpha-pairs-v1", "round-1-alpha-pairs-v2")
    assert (first.version, second.version) == (1, 2)
    assert manifest_of(first)["version"] == 1 and manifest_of(second)["aggregation"] == "majority"
    for result in (first, second):
        assert manifest_of(result)["sha256"] == hashlib.sha256(result.data_file.read_bytes()).hexdigest()
    assert first.records == 6 and second.records == 1  # 8 judgements, 2 of them ties
    assert first.path.stat().st_mode & 0o777 == 0o755  # readable by whoever trains on it
    assert sorted(p.name for p in out.iterdir()) == ["round-1-alpha-pairs-v1", "round-1-alpha-pairs-v2"]


def test_a_version_taken_meanwhile_by_another_export_is_skipped(session, tmp_path, monkeypatch):
    """Two exports racing for v2: the one whose rename finds v2 taken moves on to v3."""
    import alignloop.feedback.export as export_module

    three_voter_campaign(CampaignBuilder(session))
    session.commit()
    first = export_campaign(session, "demo", "pairs", tmp_path)
    real_next_version = export_module._next_version
    stale = iter([1])  # the first look at the folder happened before v1 was written
    monkeypatch.setattr(
        export_module, "_next_version", lambda out, stem: next(stale, None) or real_next_version(out, stem)
    )
    second = export_campaign(session, "demo", "pairs", tmp_path)
    assert (first.path.name, second.path.name) == ("demo-pairs-v1", "demo-pairs-v2")
    assert manifest_of(first)["version"] == 1 and manifest_of(second)["version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-pairs-v1", "demo-pairs-v2", "feedback.db"]


def test_a_failed_write_leaves_no_dataset_behind(session, tmp_path, monkeypatch):
    import alignloop.feedback.export as export_module

    def write_half_then_fail(path, records, style):
        Path(path).write_text('{"prompt": "half')
        raise OSError("disk full")

    three_voter_campaign(CampaignBuilder(session))
    session.commit()
    monkeypatch.setattr(export_module, "write_jsonl", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_campaign(session, "demo", "pairs", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_nothing_to_export_is_an_error_that_leaves_no_folder(session, tmp_path):
    build = CampaignBuilder(session)
    ann = build.user("ann")
    item, (a, b) = build.item("p", "A", "B")
    build.prefer(ann, item, [a, b], "tie")
    session.commit()
    with pytest.raises(ExportError, match=r"nothing to export as pairs .*'tie': 1"):
        export_campaign(session, "demo", "pairs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("campaign", "fmt", "aggregation", "message"),
    [
        ("nope", "pairs", "all", "no campaign named 'nope'"),
        ("demo", "triples", "all", "unknown format 'triples'; expected one of pairs, rankings, ratings, sft, kto"),
        ("demo", "pairs", "mean", "unknown aggregation 'mean'; expected one of all, majority, weighted"),
        ("demo", "sft", "majority", "aggregation must be 'all', got 'majority'"),
    ],
)
def test_bad_options_are_refused_by_name(session, tmp_path, campaign, fmt, aggregation, message):
    CampaignBuilder(session)
    session.commit()
    with pytest.raises(ExportError, match=message):
        export_campaign(session, campaign, fmt, tmp_path, aggregation=aggregation)


def test_export_from_url_reads_a_sqlite_file_and_refuses_a_missing_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        three_voter_campaign(CampaignBuilder(session))
        session.commit()
    engine.dispose()
    result = export_campaign_from_url(url, "demo", "pairs", tmp_path / "out", aggregation="majority")
    assert result.records == 1
    with pytest.raises(ExportError, match="no SQLite database at"):
        export_campaign_from_url(f"sqlite:///{tmp_path / 'typo.db'}", "demo", "pairs", tmp_path / "out")
    assert not (tmp_path / "typo.db").exists()


# ---------------------------------------------------------------- rankings, ratings, sft, kto


def ranking_campaign(build: CampaignBuilder) -> list[int]:
    """Ann ranks x > y > z; bob ranks y > x = z (competition numbering 1,2,2).
    Mean ranks (dense): x (1+2)/2 = 1.5, y (2+1)/2 = 1.5, z (3+2)/2 = 2.5 -> x = y > z."""
    ann, bob = build.user("ann"), build.user("bob")
    item, (x, y, z) = build.item("rank these", "X", "Y", "Z")
    build.judge(ann, item, "ranking", {"ranks": {str(x): 1, str(y): 2, str(z): 3}}, [z, x, y])
    build.judge(bob, item, "ranking", {"ranks": {str(x): 2, str(y): 1, str(z): 2}}, [x, y, z])
    return [x, y, z]


def test_rankings_all_and_mean_rank_majority(session, tmp_path):
    ranking_campaign(CampaignBuilder(session))
    session.commit()
    every = export_campaign(session, "demo", "rankings", tmp_path)
    read = read_preference_data(PreferenceDataConfig(train=[every.data_file], on_invalid="error")).train.rankings
    assert read == [Ranking(prompt=as_chat("rank these"), responses=["X", "Y", "Z"], ranks=[1, 2, 3]),
                    Ranking(prompt=as_chat("rank these"), responses=["Y", "X", "Z"], ranks=[1, 2, 2])]
    merged = export_campaign(session, "demo", "rankings", tmp_path, aggregation="majority")
    read = read_preference_data(PreferenceDataConfig(train=[merged.data_file], on_invalid="error")).train.rankings
    assert read == [Ranking(prompt=as_chat("rank these"), responses=["X", "Y", "Z"], ranks=[1, 1, 2])]


def test_pairs_from_rankings_are_every_ordered_pair(session, tmp_path):
    ranking_campaign(CampaignBuilder(session))
    session.commit()
    result = export_campaign(session, "demo", "pairs", tmp_path, pairs_from_rankings=True)
    as_tuples = [(p.chosen, p.rejected) for p in read_pairs(result.data_file)]
    # ann: X>Y, X>Z, Y>Z; bob: Y>X, Y>Z (X and Z tied give no pair)
    assert as_tuples == [("X", "Y"), ("X", "Z"), ("Y", "Z"), ("Y", "X"), ("Y", "Z")]


def test_ratings_per_axis_on_the_campaign_scale(session, tmp_path):
    build = CampaignBuilder(session, scale_min=1, scale_max=5)
    ann, bob, cat = build.user("ann"), build.user("bob"), build.user("cat")
    item, (only,) = build.item("rate this", "An answer")
    build.judge(ann, item, "rating", {"scores": {"helpful": 4, "honest": 5}}, [only])
    build.judge(bob, item, "rating", {"scores": {"helpful": 4, "honest": 3}}, [only])
    build.judge(cat, item, "rating", {"scores": {"helpful": 2, "honest": 1}}, [only])
    session.commit()
    every = export_campaign(session, "demo", "ratings", tmp_path)
    ratings = read_preference_data(PreferenceDataConfig(train=[every.data_file], on_invalid="error")).train.ratings
    assert len(ratings) == 6
    assert ratings[0] == Rating(prompt=as_chat("rate this"), response="An answer", score=4, scale_min=1, scale_max=5,
                                axis="helpful")
    merged = export_campaign(session, "demo", "ratings", tmp_path, aggregation="majority")
    ratings = read_preference_data(PreferenceDataConfig(train=[merged.data_file], on_invalid="error")).train.ratings
    # helpful: 4, 4, 2 -> 4; honest: 5, 3, 1 -> no majority
    assert [(r.axis, r.score) for r in ratings] == [("helpful", 4.0)]
    assert merged.dropped == {"no_majority": 1}


def test_sft_from_edits_reads_with_the_sft_reader(session, tmp_path):
    build = CampaignBuilder(session)
    ann, bob = build.user("ann"), build.user("bob")
    item, (draft,) = build.item("Write a haiku", "a draft")
    build.judge(ann, item, "edit", {"candidate_id": draft, "text": "An old silent pond"}, [draft])
    build.judge(bob, item, "edit", {"candidate_id": None, "text": "   "}, [draft])  # empty: not a demonstration
    session.commit()
    result = export_campaign(session, "demo", "sft", tmp_path)
    train, _ = read_train_and_eval(DataConfig(train=result.data_file), SFTExample)
    assert train == [SFTExample(prompt=as_chat("Write a haiku"), response="An old silent pond")]
    assert result.dropped == {"invalid_SFTExample": 1}


def test_kto_splits_pairs_and_thresholds_ratings_at_the_midpoint(session, tmp_path):
    build = CampaignBuilder(session, scale_min=1, scale_max=7)  # midpoint 4
    ann, bob = build.user("ann"), build.user("bob")
    item, (a, b) = build.item("compare", "A", "B")
    build.prefer(ann, item, [b, a], a)
    rated, (r,) = build.item("rate", "R")
    build.judge(ann, rated, "rating", {"scores": {"helpful": 6, "honest": 3}}, [r])  # mean 4.5: good
    build.judge(bob, rated, "rating", {"scores": {"helpful": 4, "honest": 4}}, [r])  # mean 4: dropped
    session.commit()
    result = export_campaign(session, "demo", "kto", tmp_path)
    binary = read_preference_data(PreferenceDataConfig(train=[result.data_file], on_invalid="error")).train.binary
    assert binary == [BinaryFeedback(prompt=as_chat("compare"), response="A", label=True),
                      BinaryFeedback(prompt=as_chat("compare"), response="B", label=False),
                      BinaryFeedback(prompt=as_chat("rate"), response="R", label=True)]
    assert result.dropped == {"at_midpoint": 1}


def test_exporting_leaves_torch_unimported():
    code = ("import sys, alignloop.feedback.export, alignloop.feedback.quality; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_model_export_learns_whom_to_trust_from_the_judgements_alone(session, tmp_path):
    """Three evaluators agree on eight items and a fourth always picks the other reply; on a
    ninth, one of the three and the fourth disagree: a plain majority has a tie there, the
    reliability model (no gold items) sides with the evaluator the others agree with, and reads
    the fourth's votes the other way round."""
    build = CampaignBuilder(session)
    evaluators = {name: build.user(name) for name in ("ann", "bob", "cat", "eve")}
    for index in range(8):
        item, (good, bad) = build.item(f"prompt {index}", f"good {index}", f"bad {index}")
        for name, evaluator in evaluators.items():
            build.prefer(evaluator, item, [good, bad], bad if name == "eve" else good)
    contested, (a, b) = build.item("contested", "A", "B")
    build.prefer(evaluators["ann"], contested, [a, b], a)
    build.prefer(evaluators["eve"], contested, [b, a], b)
    session.commit()

    majority = export_campaign(session, "demo", "pairs", tmp_path, aggregation="majority")
    assert majority.dropped == {"no_majority": 1}
    model = export_campaign(session, "demo", "pairs", tmp_path, aggregation="model")
    pairs = read_pairs(model.data_file)
    assert len(pairs) == 9 and all(pair.chosen.startswith(("good", "A")) for pair in pairs)
    contested_pair = next(pair for pair in pairs if pair.chosen == "A")
    assert contested_pair.margin == pytest.approx(1.0)  # eve's vote for B, inverted, is one for A
    reliability = manifest_of(model)["reliability"]
    assert {name: entry["verdict"] for name, entry in reliability.items()} == {
        "ann": "reliable", "bob": "reliable", "cat": "reliable", "eve": "malicious"}
    assert reliability["eve"]["reliability"] < 0.2 and reliability["ann"]["votes"] == 9
    weights = manifest_of(model)["weights"]
    assert weights["eve"] < -1 and weights["ann"] > 1  # logit(η): eve is consistently opposite
    # each record's training weight: 2σ(log-odds) − 1 of its order, the log-odds the sum of its voters' |logit(η)|
    confidence = lambda log_odds: 2 / (1 + math.exp(-log_odds)) - 1  # noqa: E731
    assert contested_pair.weight == pytest.approx(confidence(weights["ann"] - weights["eve"]))
    agreed = next(pair for pair in pairs if pair.chosen == "good 0")
    assert agreed.weight == pytest.approx(confidence(weights["ann"] + weights["bob"] + weights["cat"] - weights["eve"]))
    assert 0 < contested_pair.weight < agreed.weight < 1
    with pytest.raises(ExportError, match="aggregation 'model' learns reliability from the order"):
        export_campaign(session, "demo", "ratings", tmp_path, aggregation="model")


def test_a_model_ranking_weighs_each_ordered_pair_by_the_votes_for_it():
    """ann (logit η 1) ranks 1 > 2 > 3, bob (2) ranks 2 > 1 > 3; exported 2 > 1 > 3. Pair (2, 1):
    log-odds 2 − 1 = 1, confidence 2σ(1) − 1 = 0.462117; (1, 3) and (2, 3): 1 + 2 = 3, 0.905148;
    the ranking's weight is their mean, 0.757471."""
    from collections import Counter

    from alignloop.feedback.export import _Ballot, _Context, _ranking_confidence
    from alignloop.feedback.quality import JudgementFacts

    def ballot(judgement: int, evaluator: int, ranks: dict[int, int]) -> _Ballot:
        fact = JudgementFacts(judgement, 1, evaluator, "ranking", {"ranks": ranks}, (1, 2, 3))
        return _Ballot((1, 1, 2, 3), fact, ranks)

    context = _Context("model", {}, {}, (1, 7), {10: 1.0, 20: 2.0}, Counter())
    unit = [ballot(1, 10, {1: 1, 2: 2, 3: 3}), ballot(2, 20, {1: 2, 2: 1, 3: 3})]
    assert _ranking_confidence(unit, {2: 1, 1: 2, 3: 3}, context) == pytest.approx(0.7574712215165812)
    assert _ranking_confidence(unit, {1: 1, 2: 1, 3: 1}, context) == 0.0  # all tied: no order to weigh


def test_an_opposite_evaluators_ballot_is_read_the_other_way_round():
    from alignloop.feedback.export import _Ballot, _inverted
    from alignloop.feedback.quality import JudgementFacts

    ranking = JudgementFacts(1, 1, 10, "ranking", {}, (1, 2, 3))
    assert _inverted(_Ballot((1,), ranking, {1: 1, 2: 2, 3: 2})).label == {1: 2, 2: 1, 3: 1}  # ties stay ties
    pair = JudgementFacts(2, 1, 10, "pairwise", {}, (7, 4))
    assert _inverted(_Ballot((1, 4, 7), pair, 7)).label == 4
    assert _inverted(_Ballot((1, 4, 7), pair, "tie")) is None  # a tie has no opposite
