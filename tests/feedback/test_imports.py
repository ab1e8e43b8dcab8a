"""Importing prompts and candidates: JSONL, CSV and JSON; gold answers mapped to candidate ids;
every bad row reported as file:line with the reason; nothing stored when any row is bad."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from alignloop.data.errors import DataError
from alignloop.feedback import imports, service
from alignloop.feedback.database import make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.models import Candidate, Item


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        service.create_campaign(session, "c", ["pairwise", "ranking"])
    yield factory
    engine.dispose()


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def run_import(store, name: str, data: bytes) -> imports.ImportResult:
    with transaction(store) as session:
        return imports.import_file(session, service.campaign_by_name(session, "c"), name, data)


def counts(store) -> tuple[int, int]:
    with transaction(store) as session:
        return (session.scalar(select(func.count()).select_from(Item)),
                session.scalar(select(func.count()).select_from(Candidate)))


def test_prompts_with_candidates_and_gold_from_jsonl(store):
    data = jsonl(
        {"prompt": "Say hi", "candidates": ["hi", "hello", "yo"], "gold": {"pairwise": {"better": 1}, "ranking": {"ranks": [2, 1, 2]}}},
        {"prompt": [{"role": "user", "content": "2+2?"}], "candidates": ["4", "5"], "model": "tiny"},
        {"prompt": "No candidates yet"},
    )
    assert run_import(store, "prompts.jsonl", data) == imports.ImportResult(items=3, candidates=5)
    with transaction(store) as session:
        items = session.scalars(select(Item).order_by(Item.id)).all()
        first, chat, bare = items
        ids = [c.id for c in first.candidates]
        assert first.is_gold and first.source == "prompts.jsonl:1"
        assert first.gold == {"pairwise": {"better": ids[1]}, "ranking": {"ranks": {str(ids[0]): 2, str(ids[1]): 1, str(ids[2]): 2}}}
        assert [c.text for c in first.candidates] == ["hi", "hello", "yo"]
        assert chat.prompt == [{"role": "user", "content": "2+2?"}] and not chat.is_gold and chat.gold is None
        assert [c.model for c in chat.candidates] == ["tiny", "tiny"]
        assert bare.candidates == []


def test_csv_with_a_json_list_of_candidates(store):
    data = b'prompt,candidates,gold\n"Hi, you","[""a"", ""b""]","{""pairwise"": {""better"": ""tie""}}"\nAlone,,\n'
    assert run_import(store, "prompts.csv", data) == imports.ImportResult(items=2, candidates=2)
    with transaction(store) as session:
        first = session.scalars(select(Item).order_by(Item.id)).first()
        assert first.prompt == "Hi, you" and first.gold == {"pairwise": {"better": "tie"}}


def test_candidates_by_prompt_id_or_prompt_text(store):
    run_import(store, "prompts.jsonl", jsonl({"prompt": "first"}, {"prompt": "second"}))
    with transaction(store) as session:
        first_id, second_id = session.scalars(select(Item.id).order_by(Item.id)).all()
    data = jsonl({"prompt_id": first_id, "response": "r1"}, {"prompt": "second", "response": "r2", "model": "m"},
                 {"prompt": "second", "response": "r3"})
    assert run_import(store, "candidates.jsonl", data) == imports.ImportResult(items=0, candidates=3)
    with transaction(store) as session:
        by_item = dict(session.execute(select(Candidate.item_id, func.count()).group_by(Candidate.item_id)).all())
    assert by_item == {first_id: 1, second_id: 2}


@pytest.mark.parametrize("name, data, expected", [
    ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "broken\n', ["p.jsonl:2: not valid JSON"]),
    ("p.jsonl", jsonl({"prompt": "ok"}, {"prompt": "x", "answer": 1}), ["p.jsonl:2: unknown column 'answer' (expected: prompt, candidates, gold, model)"]),
    ("p.jsonl", jsonl({"prompt": "ok"}, {"candidates": ["a"]}), ["p.jsonl:2: field 'prompt': missing required field"]),
    ("p.jsonl", jsonl({"prompt": "x" * 20_001}), ["p.jsonl:1: field 'prompt': 20001 characters, more than the limit of 20000"]),
    ("p.jsonl", jsonl({"prompt": "ok", "candidates": ["fine", "y" * 20_001]}), ["p.jsonl:1: field 'candidates[1]': 20001 characters"]),
    ("p.jsonl", jsonl({"prompt": "ok", "candidates": ["a", "b"], "gold": {"pairwise": {"better": 2}}}), ["p.jsonl:1: field 'gold.pairwise'"]),
    ("p.jsonl", jsonl({"prompt": "ok", "candidates": ["a", "b"], "gold": {"ranking": {"ranks": [1]}}}), ["p.jsonl:1: field 'gold.ranking'"]),
    ("p.jsonl", b'["not", "an", "object"]\n', ["p.jsonl:1: expected an object (one row), got list"]),
    ("p.csv", b"prompt,wrong\nhello,1\n", ["p.csv:2: unknown column 'wrong'"]),
    ("p.csv", b'prompt,candidates\nok,"[""a""]"\ntoo,many,cells\n', ["p.csv:3: expected 2 cells (one per column), got 3"]),
    ("p.jsonl", b"\xff\xfe bad bytes", ["p.jsonl: not UTF-8 text"]),
    ("p.txt", b"prompt\nhi\n", ["p.txt: unknown file type"]),
    ("p.json", b'{"prompt": "one"}', ["p.json: expected a JSON array of rows"]),
    ("c.jsonl", jsonl({"response": "r"}), ["c.jsonl:1: expected exactly one of 'prompt_id' or 'prompt'"]),
    ("c.jsonl", jsonl({"prompt": "nowhere", "response": "r"}), ["c.jsonl:1: field 'prompt': no item of campaign 'c' has this prompt text"]),
    ("c.jsonl", jsonl({"prompt": "gold seed", "response": "r"}), ["c.jsonl:1: field 'prompt': item 2 is a gold item, its candidates are fixed"]),
    ("p.jsonl", jsonl({"prompt": "ok", "candidates": ["a"], "model": "m" * 256}), ["p.jsonl:1: field 'model': String should have at most 255 characters"]),
])
def test_bad_files_are_refused_with_line_and_reason_and_nothing_is_stored(store, name, data, expected):
    run_import(store, "seed.jsonl", jsonl({"prompt": "seed", "candidates": ["a", "b"]},
                                          {"prompt": "gold seed", "candidates": ["a", "b"], "gold": {"pairwise": {"better": 0}}}))
    before = counts(store)
    with pytest.raises(DataError) as raised:
        run_import(store, name, data)
    for line in expected:
        assert line in str(raised.value)
    assert counts(store) == before


def test_every_bad_row_is_reported_at_once(store):
    data = jsonl({"prompt": ""}, {"prompt": "fine"}, {"prompt": "ok", "extra": 1}) + b"{oops\n"
    with pytest.raises(DataError) as raised:
        run_import(store, "many.jsonl", data)
    lines = str(raised.value).splitlines()
    assert lines[0] == "many.jsonl: nothing imported, 3 problem(s):"
    assert [line.split(":")[1] for line in lines[1:]] == ["1", "3", "4"]
    assert counts(store) == (0, 0)


def test_records_from_an_api_body(store):
    with transaction(store) as session:
        campaign = service.campaign_by_name(session, "c")
        assert imports.import_records(session, campaign, [{"prompt": "p", "candidates": ["a", "b"]}]) == imports.ImportResult(1, 2)
    with pytest.raises(DataError, match="body: item 1: field 'prompt'"), transaction(store) as session:
        imports.import_records(session, service.campaign_by_name(session, "c"), [{"prompt": "q"}, {"prompt": 3}])
    assert counts(store) == (1, 2)


def test_cli_creates_users_tokens_and_campaigns_and_imports_all_or_nothing(tmp_path):
    import typer
    from typer.testing import CliRunner

    from alignloop.cli.feedback import db_app, feedback_app

    cli = typer.Typer()  # as alignloop.cli.main registers them, without the training commands' imports
    cli.add_typer(db_app, name="db")
    cli.add_typer(feedback_app, name="feedback")
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    good, bad = tmp_path / "prompts.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(jsonl({"prompt": "p", "candidates": ["a", "b"]}))
    bad.write_bytes(jsonl({"prompt": "q"}) + b"{nope\n")
    assert runner.invoke(cli, ["db", "upgrade", "--db", url]).exit_code == 0
    assert runner.invoke(cli, ["feedback", "create-user", "ana", "--role", "admin", "--password", "password1", "--db", url]).exit_code == 0
    token = runner.invoke(cli, ["feedback", "token", "ana", "--db", url])
    assert token.exit_code == 0 and len(token.stdout.strip()) >= 43
    created = runner.invoke(cli, ["feedback", "create-campaign", "cli", "--tasks", "pairwise,rating", "--rubric", "helpful",
                                           "--prompts", str(good), "--db", url])
    assert created.exit_code == 0 and "imported 1 items and 2 candidates" in created.stdout
    refused = runner.invoke(cli, ["feedback", "import", str(bad), "--campaign", "cli", "--db", url])
    assert refused.exit_code == 2 and f"{bad}:2: not valid JSON" in refused.output and "Traceback" not in refused.output
    duplicate = runner.invoke(cli, ["feedback", "create-user", "ana", "--password", "password1", "--db", url])
    assert duplicate.exit_code == 2 and "user 'ana' already exists" in duplicate.output
    judge = runner.invoke(cli, ["feedback", "create-user", "gpt", "--ai-judge", "--password", "password1", "--db", url])
    assert judge.exit_code == 0 and "(AI judge)" in judge.stdout
    engine = make_engine(url)
    try:
        with transaction(make_session_factory(engine)) as session:
            campaign = service.campaign_by_name(session, "cli")
            assert (campaign.task_types, campaign.rubric_axes) == (["pairwise", "rating"], ["helpful"])
            assert session.scalar(select(func.count()).select_from(Item)) == 1  # the bad file added nothing
            assert service.user_by_name(session, "gpt").is_ai_judge and not service.user_by_name(session, "ana").is_ai_judge
    finally:
        engine.dispose()
