"""The feedback store's schema and domain rules, on a real SQLite file and a real PostgreSQL
database: migrations match the models; assignment respects overlap, never repeats an item,
mixes in gold items and records a randomised display order; answers are validated per task
type; submissions are idempotent by client key and refused for someone else's assignment."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from alignloop.feedback import service
from alignloop.feedback.assignment import InvalidAnswer, ItemLoad, display_order, pick_item
from alignloop.feedback.database import alembic_config, make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.models import Assignment, AssignmentStatus, Base, Candidate, Item, Judgement, TaskType, utcnow

TABLES = {"users", "api_tokens", "web_sessions", "sign_in_attempts", "campaigns", "items", "candidates",
          "assignments", "judgements", "guideline_acks"}


@pytest.fixture
def store(db_url):
    """A session factory over a freshly migrated database."""
    upgrade(db_url)
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def add_items(session, campaign, candidate_counts, gold=()):
    """Items with the given number of candidates each; indexes in `gold` become gold items."""
    items = []
    for index, count in enumerate(candidate_counts):
        item = Item(campaign_id=campaign.id, prompt=f"prompt {index}", is_gold=index in gold,
                    gold={"pairwise": {"better": "tie"}} if index in gold else None)
        item.candidates = [Candidate(text=f"response {index}.{k}", meta={}) for k in range(count)]
        session.add(item)
        items.append(item)
    session.flush()
    return items


def ready_evaluators(session, campaign, names):
    users = [service.create_user(session, name, "password1") for name in names]
    for user in users:
        service.acknowledge_guidelines(session, user, campaign.id)
    return users


# ---------------------------------------------------------------- assignment rules (pure)


def test_pick_item_prefers_the_least_covered_usable_item():
    loads = [ItemLoad(1, False, 2, 2), ItemLoad(2, False, 2, 1), ItemLoad(3, False, 1, 0), ItemLoad(4, False, 3, 3)]
    # overlap 3: item 4 is full, item 3 has too few candidates for a pair, item 2 has fewest evaluators.
    assert pick_item(loads, TaskType.pairwise, 3, random.Random(0), gold_rate=0.0).item_id == 2
    assert pick_item(loads, TaskType.rating, 3, random.Random(0), gold_rate=0.0).item_id == 3  # one candidate is enough
    assert pick_item([ItemLoad(1, False, 2, 3)], TaskType.pairwise, 3, random.Random(0), gold_rate=0.0) is None


def test_pick_item_mixes_in_gold_at_its_rate():
    loads = [ItemLoad(1, False, 2, 0), ItemLoad(2, True, 2, 50)]  # gold ignores overlap
    rng = random.Random(3)
    picks = [pick_item(loads, TaskType.pairwise, 3, rng, gold_rate=0.25).item_id for _ in range(4000)]
    assert 0.22 < picks.count(2) / len(picks) < 0.28
    assert pick_item([loads[1]], TaskType.pairwise, 3, rng, gold_rate=0.0).item_id == 2  # only gold left


def test_display_order_by_task_type():
    rng = random.Random(0)
    ids = (10, 11, 12, 13)
    pair = display_order(TaskType.pairwise, ids, rng)
    assert len(pair) == 2 and len(set(pair)) == 2 and set(pair) <= set(ids)
    assert sorted(display_order(TaskType.ranking, ids, rng)) == list(ids)
    assert len(display_order(TaskType.rating, ids, rng)) == 1
    assert display_order(TaskType.edit, (), rng) == []


# ---------------------------------------------------------------- schema


def test_migrations_create_exactly_the_models(db_url):
    upgrade(db_url)
    upgrade(db_url)  # a second run is a no-op, not an error
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert differences == []
    assert tables == TABLES


def test_downgrade_to_base_and_back(db_url):
    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) & TABLES == set()
        upgrade(db_url)
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrating_down_and_up_loses_no_stored_row(db_url):
    """A table copy in SQLite's batch mode drops the old table, which with foreign keys on
    deletes its rows and, through ON DELETE CASCADE, every candidate, assignment and judgement
    pointing at them: a migration must keep every row, both ways."""
    upgrade(db_url)
    engine = make_engine(db_url)
    store = make_session_factory(engine)
    with transaction(store) as session:
        campaign = service.create_campaign(session, "kept", ["pairwise"], overlap=1)
        add_items(session, campaign, [2, 2])
        (user,) = ready_evaluators(session, campaign, ["e1"])
        assignment = service.next_assignment(session, campaign.id, user, rng=random.Random(0))
        service.submit_judgement(session, assignment.id, user, {"choice": "a"})

    def counts() -> dict[str, int]:
        with engine.connect() as connection:
            return {table: connection.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar()
                    for table in ("items", "candidates", "assignments", "judgements", "users")}

    before = counts()
    assert before == {"items": 2, "candidates": 4, "assignments": 1, "judgements": 1, "users": 1}
    try:
        command.downgrade(alembic_config(db_url), "0001")
        assert counts() == before
        upgrade(db_url)
        assert counts() == before
        with transaction(store) as session:  # and the upgraded rows read as the models say
            assert {item.audience for item in session.scalars(select(Item))} == {"any"}
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


# ---------------------------------------------------------------- users and campaigns


def test_create_user_refuses_duplicates_and_bad_input(store):
    with transaction(store) as session:
        user = service.create_user(session, "ana", "secret-words", "admin")
        assert user.password_hash != "secret-words" and user.password_hash.startswith("$argon2id$")
    with pytest.raises(service.Conflict, match="already exists"), transaction(store) as session:
        service.create_user(session, "ana", "other-words")
    for name, password, role, message in [("a b", "password1", "evaluator", "username"), ("bo", "short", "evaluator", "password"),
                                          ("bo", "password1", "root", "role")]:
        with pytest.raises(service.InvalidRequest, match=message), transaction(store) as session:
            service.create_user(session, name, password, role)


def test_create_campaign_validates_settings(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise", "rating", "pairwise"], rubric_axes=[" helpful", "", "honest"])
        assert campaign.task_types == ["pairwise", "rating"]
        assert campaign.rubric_axes == ["helpful", "honest"]
    bad = [({"task_types": ["vote"]}, "task_types"), ({"task_types": []}, "task_types"),
           ({"overlap": 0}, "overlap"), ({"scale_min": 5, "scale_max": 5}, "scale"),
           ({"guidelines": "x" * 20_001}, "guidelines: 20001 characters"), ({"min_seconds": -1}, "min_seconds")]
    for override, message in bad:
        arguments = {"task_types": ["pairwise"], **override}
        with pytest.raises(service.InvalidRequest, match=message), transaction(store) as session:
            service.create_campaign(session, "other", arguments.pop("task_types"), **arguments)
    with pytest.raises(service.Conflict), transaction(store) as session:
        service.create_campaign(session, "c", ["pairwise"])


# ---------------------------------------------------------------- assignment


def test_guidelines_must_be_read_before_the_first_task(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], guidelines="Prefer honest answers.")
        add_items(session, campaign, [2])
        user = service.create_user(session, "eve", "password1")
    with pytest.raises(service.GuidelinesNotRead), transaction(store) as session:
        service.next_assignment(session, campaign.id, user)
    with transaction(store) as session:
        service.acknowledge_guidelines(session, user, campaign.id)
        service.acknowledge_guidelines(session, user, campaign.id)  # twice is fine
        assert service.next_assignment(session, campaign.id, user) is not None


def test_overlap_is_respected_and_nobody_sees_an_item_twice(store):
    # 3 items x overlap 2 = 6 assignments: the first two evaluators get all 3 items each, the third none.
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=2)
        add_items(session, campaign, [2, 2, 2])
        users = ready_evaluators(session, campaign, ["e1", "e2", "e3"])
    rng = random.Random(0)
    seen: dict[str, list[int]] = {}
    for user in users:
        seen[user.username] = []
        while True:
            with transaction(store) as session:
                assignment = service.next_assignment(session, campaign.id, user, rng=rng)
                if assignment is None:
                    break
                seen[user.username].append(assignment.item_id)
                service.submit_judgement(session, assignment.id, user, {"choice": "tie"})
    assert [len(seen[name]) for name in ("e1", "e2", "e3")] == [3, 3, 0]
    assert all(len(set(items)) == len(items) for items in seen.values())
    with transaction(store) as session:
        per_item = session.execute(select(Judgement.item_id, func.count()).group_by(Judgement.item_id)).all()
    assert sorted(count for _, count in per_item) == [2, 2, 2]


def test_an_open_assignment_is_resumed_not_duplicated(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"])
        add_items(session, campaign, [2, 2])
        (user,) = ready_evaluators(session, campaign, ["e1"])
        first = service.next_assignment(session, campaign.id, user)
        again = service.next_assignment(session, campaign.id, user)
    assert again.id == first.id


def test_an_expired_assignment_frees_its_slot(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=1)
        add_items(session, campaign, [2])
        early, late = ready_evaluators(session, campaign, ["early", "late"])
        abandoned = service.next_assignment(session, campaign.id, early)
        assert service.next_assignment(session, campaign.id, late) is None  # the only slot is held
        session.get(Assignment, abandoned.id).created_at = utcnow() - service.ASSIGNMENT_TTL - timedelta(minutes=1)
    with transaction(store) as session:
        assert service.next_assignment(session, campaign.id, late).item_id == abandoned.item_id


def test_gold_items_go_to_everyone_regardless_of_overlap(store):
    # overlap 1: the regular item goes to one evaluator only, the gold item to all three.
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=1)
        regular, gold = add_items(session, campaign, [2, 2], gold={1})
        users = ready_evaluators(session, campaign, ["e1", "e2", "e3"])
    rng = random.Random(1)
    for user in users:
        while True:
            with transaction(store) as session:
                assignment = service.next_assignment(session, campaign.id, user, rng=rng)
                if assignment is None:
                    break
                service.submit_judgement(session, assignment.id, user, {"choice": "a"})
    with transaction(store) as session:
        counts = dict(session.execute(select(Judgement.item_id, func.count()).group_by(Judgement.item_id)).all())
    assert counts == {regular.id: 1, gold.id: 3}


def test_held_back_items_keep_their_scores_and_are_never_assigned_or_counted(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=1)
        kept, held, gold = add_items(session, campaign, [2, 2, 2], gold={2})
        assert service.record_selection(session, campaign, {kept.id: 0.4, held.id: 0.1}, [kept.id]) == 1
        (user,) = ready_evaluators(session, campaign, ["e1"])
        progress = service.campaign_progress(session, campaign)
    assert (progress.items, progress.gold_items, progress.target) == (2, 1, 1)  # the gold item and the kept one
    given = []
    while True:
        with transaction(store) as session:
            assignment = service.next_assignment(session, campaign.id, user, rng=random.Random(0))
            if assignment is None:
                break
            given.append(assignment.item_id)
            service.submit_judgement(session, assignment.id, user, {"choice": "a"})
    assert sorted(given) == sorted([kept.id, gold.id])
    with transaction(store) as session:
        rows = {item.id: (item.selection_score, item.held_back) for item in session.scalars(select(Item))}
    assert rows == {kept.id: (0.4, False), held.id: (0.1, True), gold.id: (None, False)}


def test_routed_items_go_only_to_people_or_only_to_ai_judges_and_gold_to_both(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=2)
        for_people, for_judges, gold = add_items(session, campaign, [2, 2, 2], gold={2})
        assert service.record_routing(session, campaign, [for_people.id]) == {"people": 1, "judges": 1}
        person, = ready_evaluators(session, campaign, ["person"])
        judge = service.create_user(session, "judge", "password1", is_ai_judge=True)
        service.acknowledge_guidelines(session, judge, campaign.id)
    given: dict[str, list[int]] = {}
    for user in (person, judge):
        given[user.username] = []
        while True:
            with transaction(store) as session:
                assignment = service.next_assignment(session, campaign.id, user, rng=random.Random(0))
                if assignment is None:
                    break
                given[user.username].append(assignment.item_id)
                service.submit_judgement(session, assignment.id, user, {"choice": "a"})
    assert sorted(given["person"]) == sorted([for_people.id, gold.id])
    assert sorted(given["judge"]) == sorted([for_judges.id, gold.id])
    with transaction(store) as session:
        with pytest.raises(service.Conflict, match="routing comes before judging"):
            service.record_routing(session, campaign, [])


def test_an_item_someone_was_given_cannot_be_held_back(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"], overlap=1)
        first, second = add_items(session, campaign, [2, 2])
        (user,) = ready_evaluators(session, campaign, ["e1"])
        given = service.next_assignment(session, campaign.id, user, rng=random.Random(0)).item_id
        other = second.id if given == first.id else first.id
        with pytest.raises(service.Conflict, match=f"item {given} .* has been assigned"):
            service.record_selection(session, campaign, {}, [other])
        with pytest.raises(service.InvalidRequest, match="not regular items"):
            service.record_selection(session, campaign, {12345: 1.0}, [given])
        assert service.record_selection(session, campaign, {}, [given, other]) == 0


def test_display_order_is_randomised_recorded_and_complete_for_rankings(store):
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise", "ranking"], overlap=1)
        items = add_items(session, campaign, [4] * 12)
        (user,) = ready_evaluators(session, campaign, ["e1"])
    ids = {item.id: [c.id for c in item.candidates] for item in items}
    rng = random.Random(7)
    pair_orders, rankings = [], []
    for task in ("pairwise", "ranking"):
        for _ in range(12):
            with transaction(store) as session:
                assignment = service.next_assignment(session, campaign.id, user, task, rng=rng)
                shown = list(assignment.shown_order)
                answer = {"choice": "b"} if task == "pairwise" else {"ranks": {str(c): 1 for c in shown}}
                judgement, _ = service.submit_judgement(session, assignment.id, user, answer)
                assert judgement.shown_order == shown
                (pair_orders if task == "pairwise" else rankings).append((assignment.item_id, shown, judgement))
    for item_id, shown, judgement in pair_orders:
        assert len(shown) == 2 and set(shown) <= set(ids[item_id])
        assert judgement.answer == {"choice": "b", "better": shown[1], "strength": None}
    # Which candidate is shown first varies: not always the lower id (p of 12 in a row = 1/4096).
    assert len({shown[0] < shown[1] for _, shown, _ in pair_orders}) == 2
    for item_id, shown, _ in rankings:
        assert sorted(shown) == ids[item_id]
    assert any(shown != ids[item_id] for item_id, shown, _ in rankings)


# ---------------------------------------------------------------- submitting


@pytest.fixture
def one_task_each(store):
    """A campaign with every task type, rubric helpful/honest on 1..5, and one evaluator."""
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise", "ranking", "rating", "comment", "edit"],
                                           rubric_axes=["helpful", "honest"], scale_min=1, scale_max=5)
        add_items(session, campaign, [3])
        (user,) = ready_evaluators(session, campaign, ["e1"])
        assignments = {task: service.next_assignment(session, campaign.id, user, task) for task in campaign.task_types}
    return store, user, assignments


@pytest.mark.parametrize("task, answer, message", [
    ("pairwise", {"choice": "left"}, "choice: expected one of a, b, tie, both_bad"),
    ("pairwise", {"choice": "a", "strength": 4}, "strength: expected a whole number from 1 to 3"),
    ("ranking", {"ranks": {}}, "ranks: expected a rank for exactly the shown candidates"),
    ("ranking", "RANKS_WITH_4", "expected a whole number from 1 to 3, got 4"),
    ("rating", {"scores": {"helpful": 3}}, "scores: expected a score for each rubric axis"),
    ("rating", {"scores": {"helpful": 3, "honest": 6}}, "scores.honest: expected a whole number from 1 to 5, got 6"),
    ("comment", {"text": "   "}, "text: expected non-empty text"),
    ("edit", {"text": "x" * 20_001}, "text: 20001 characters, more than the limit of 20000"),
    ("edit", {"text": "ok", "candidate_id": -1}, "candidate_id: expected the shown candidate"),
])
def test_invalid_answers_are_refused_and_nothing_is_stored(one_task_each, task, answer, message):
    store, user, assignments = one_task_each
    assignment = assignments[task]
    if answer == "RANKS_WITH_4":
        answer = {"ranks": {str(c): 4 if i == 0 else 1 for i, c in enumerate(assignment.shown_order)}}
    with pytest.raises(InvalidAnswer, match=message.replace("(", r"\(")), transaction(store) as session:
        service.submit_judgement(session, assignment.id, user, answer)
    with transaction(store) as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 0
        assert session.get(Assignment, assignment.id).status == AssignmentStatus.open


def test_valid_answers_are_stored_in_candidate_ids(one_task_each):
    store, user, assignments = one_task_each
    ranking_shown = assignments["ranking"].shown_order
    answers = {
        "pairwise": {"choice": "a", "strength": "3"},
        "ranking": {"ranks": {str(ranking_shown[0]): 2, str(ranking_shown[1]): 1, str(ranking_shown[2]): 2}},
        "rating": {"scores": {"helpful": "4", "honest": 5}},
        "comment": {"text": "B rambles."},
        "edit": {"text": "The ideal answer."},
    }
    stored = {}
    with transaction(store) as session:
        for task, answer in answers.items():
            judgement, created = service.submit_judgement(session, assignments[task].id, user, answer, comment="note")
            assert created and judgement.comment == "note"
            stored[task] = judgement.answer
    assert stored["pairwise"] == {"choice": "a", "better": assignments["pairwise"].shown_order[0], "strength": 3}
    assert stored["ranking"] == {"ranks": {str(ranking_shown[0]): 2, str(ranking_shown[1]): 1, str(ranking_shown[2]): 2}}
    assert stored["rating"] == {"scores": {"helpful": 4, "honest": 5}}
    assert stored["comment"] == {"text": "B rambles."}
    assert stored["edit"] == {"candidate_id": assignments["edit"].shown_order[0], "text": "The ideal answer."}


def test_submission_records_timing_and_marks_the_assignment_done(one_task_each):
    store, user, assignments = one_task_each
    assignment = assignments["comment"]
    with transaction(store) as session:
        session.get(Assignment, assignment.id).opened_at = utcnow() - timedelta(seconds=5)
    with transaction(store) as session:
        judgement, _ = service.submit_judgement(session, assignment.id, user, {"text": "fine"})
    assert 5_000 <= judgement.duration_ms < 6_000
    with transaction(store) as session:
        assert session.get(Assignment, assignment.id).status == AssignmentStatus.done
    with pytest.raises(service.Conflict, match="already done"), transaction(store) as session:
        service.submit_judgement(session, assignment.id, user, {"text": "again"})


def test_client_key_makes_a_retry_return_the_stored_judgement(one_task_each):
    store, user, assignments = one_task_each
    with transaction(store) as session:
        first, created = service.submit_judgement(session, assignments["pairwise"].id, user, {"choice": "a"}, client_key="k1")
    with transaction(store) as session:
        retry, created_again = service.submit_judgement(session, assignments["pairwise"].id, user, {"choice": "b"}, client_key="k1")
    assert (created, created_again, retry.id, retry.answer["choice"]) == (True, False, first.id, "a")
    with pytest.raises(service.Conflict, match="already used"), transaction(store) as session:
        service.submit_judgement(session, assignments["comment"].id, user, {"text": "x"}, client_key="k1")
    with transaction(store) as session:
        assert session.scalar(select(func.count()).select_from(Judgement)) == 1


def test_another_evaluators_assignment_is_forbidden(one_task_each):
    store, owner, assignments = one_task_each
    with transaction(store) as session:
        intruder = service.create_user(session, "mallory", "password1")
        admin = service.create_user(session, "root", "password1", "admin")
    assignment = assignments["pairwise"]
    with pytest.raises(service.Forbidden), transaction(store) as session:
        service.assignment_for(session, assignment.id, intruder)
    for user in (intruder, admin):  # admins may look, but nobody answers for someone else
        with pytest.raises(service.Forbidden), transaction(store) as session:
            service.submit_judgement(session, assignment.id, user, {"choice": "a"})
    with transaction(store) as session:
        assert service.assignment_for(session, assignment.id, admin).id == assignment.id
    with pytest.raises(service.NotFound), transaction(store) as session:
        service.submit_judgement(session, 10_000, owner, {"choice": "a"})


def test_progress_counts_judgements_per_task_type(one_task_each):
    store, user, assignments = one_task_each
    with transaction(store) as session:
        service.submit_judgement(session, assignments["pairwise"].id, user, {"choice": "tie"})
        service.submit_judgement(session, assignments["comment"].id, user, {"text": "ok"})
        campaign = service.get_campaign(session, assignments["pairwise"].campaign_id)
        progress = service.campaign_progress(session, campaign)
        done = service.evaluator_done_count(session, campaign.id, user.id)
    # 1 regular item x overlap 3 = target 3 per task type
    assert progress == service.CampaignProgress(
        items=1, gold_items=0, judgements={"pairwise": 1, "ranking": 0, "rating": 0, "comment": 1, "edit": 0}, target=3)
    assert done == 2
