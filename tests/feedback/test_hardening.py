"""Regression tests for the defects an attack run found in the feedback platform, one or more per
defect, against a real server on SQLite and PostgreSQL where the database matters: the sign-in
limit under parallel guesses, text no database can hold, numbers past a column's range, account
management, the dashboard blocking writers, a GET that changed state, headers on errors and the
docs' assets, and the smaller ones (CSV quotes, export paths and advice, ranks, body size)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import typer
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from alignloop.cli.feedback import db_app, feedback_app
from alignloop.data.errors import DataError
from alignloop.feedback import export, imports, quality, security, service
from alignloop.feedback.database import make_engine, make_read_session_factory, make_session_factory, transaction, upgrade
from alignloop.feedback.models import ApiToken, Assignment, Item, Judgement
from alignloop.web import create_app, server_options
from alignloop.web.middleware import DOCS_CSP, MAX_BODY_BYTES, SECURITY_HEADERS
from alignloop.web.store import ReportCache

from live_server import serving
from web_client import PASSWORD, api_next, bearer, csrf_of, sign_in, signed_in

LONE_SURROGATE, NUL = "\udfff", "\x00"


def post_json(url: str, headers: dict, body) -> httpx.Response:
    """POST `body` as JSON with every non-ASCII character escaped, as many clients send it: a lone
    surrogate then travels as the escape \\udfff (httpx itself would refuse to encode it)."""
    return httpx.post(url, headers={**headers, "content-type": "application/json"}, content=json.dumps(body))


def count(store, model) -> int:
    with transaction(store) as session:
        return session.scalar(select(func.count()).select_from(model))


def cli() -> typer.Typer:
    app = typer.Typer()  # as alignloop.cli.main registers them
    app.add_typer(db_app, name="db")
    app.add_typer(feedback_app, name="feedback")
    return app


# ---------------------------------------------------------------- 1. the sign-in limit


def parallel_sign_ins(base: str, attempts: list[tuple[str, str]], headers: dict | None = None) -> list[int]:
    """Each (username, password) posted at the same moment from its own browser; the statuses."""
    clients = [httpx.Client(base_url=base, headers=headers or {}, timeout=60) for _ in attempts]
    tokens = [csrf_of(client.get("/signin")) for client in clients]
    start = threading.Barrier(len(attempts))

    def attempt(index: int) -> int:
        username, password = attempts[index]
        start.wait()
        return clients[index].post("/signin", data={"username": username, "password": password,
                                                     "csrf_token": tokens[index]}).status_code

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(attempt, range(len(attempts))))


@pytest.mark.parametrize("parallel", [20, 100])
def test_parallel_wrong_passwords_cannot_outrun_the_sign_in_limit(world, parallel):
    base = world[0]
    statuses = parallel_sign_ins(base, [("eve", "wrong guess")] * parallel)
    assert sorted(statuses) == [401] * security.MAX_FAILURES + [429] * (parallel - security.MAX_FAILURES)
    assert sign_in(httpx.Client(base_url=base), "eve").status_code == 429  # the right password too, now


def test_one_password_sprayed_over_many_accounts_is_limited_per_client(sqlite_world):
    client = httpx.Client(base_url=sqlite_world[0])
    statuses = [sign_in(client, f"user{index}", "Summer2026!").status_code for index in range(security.MAX_CLIENT_FAILURES + 3)]
    assert statuses == [401] * security.MAX_CLIENT_FAILURES + [429] * 3


def test_one_account_guessed_from_many_addresses_is_limited(db_url):
    upgrade(db_url)
    store = make_session_factory(make_engine(db_url))
    with transaction(store) as session:
        service.create_user(session, "ana", PASSWORD)
    for index in range(security.MAX_ACCOUNT_FAILURES):
        with store() as session, pytest.raises(security.SignInFailed):
            try:
                security.sign_in(session, "ana", "guess", f"10.0.0.{index}")
            finally:
                session.commit()
    with store() as session, pytest.raises(security.SignInRateLimited):
        security.sign_in(session, "ana", PASSWORD, "10.0.1.1")


def test_a_forwarded_for_header_gives_no_fresh_allowance(sqlite_world):
    base = sqlite_world[0]
    client = httpx.Client(base_url=base)
    assert [sign_in(client, "eve", "wrong").status_code for _ in range(security.MAX_FAILURES)] == [401] * security.MAX_FAILURES
    spoofing = httpx.Client(base_url=base, headers={"X-Forwarded-For": "203.0.113.7"})
    assert sign_in(spoofing, "eve").status_code == 429  # still the loopback client, whatever the header says


def test_forwarded_headers_are_believed_only_from_named_proxies():
    assert server_options() == {"proxy_headers": False, "forwarded_allow_ips": ""}
    assert server_options("10.1.2.3") == {"proxy_headers": True, "forwarded_allow_ips": "10.1.2.3"}


def test_a_nul_in_a_username_is_a_failed_sign_in_on_both_databases(world):
    client = httpx.Client(base_url=world[0])
    assert sign_in(client, f"eve{NUL}", "x").status_code == 401
    assert sign_in(client, "eve").status_code == 303


# ---------------------------------------------------------------- 2. text no database can hold


@pytest.mark.parametrize("bad", [LONE_SURROGATE, NUL], ids=["lone-surrogate", "nul"])
def test_unstorable_text_is_refused_at_every_entry_point_and_poisons_nothing(world, bad):
    base, store, tokens, campaign_id = world
    admin, eve = bearer(tokens["admin"]), bearer(tokens["eve"])
    items_before = count(store, Item)
    imported = post_json(f"{base}/api/v1/campaigns/{campaign_id}/items", admin,
                         {"rows": [{"prompt": "fine"}, {"prompt": f"a{bad}b", "candidates": ["x", "y"]}]})
    assert imported.status_code == 422 and "rows" in imported.text and "U+" in imported.text, imported.text
    created = post_json(f"{base}/api/v1/campaigns", admin, {"name": f"n{bad}", "task_types": ["pairwise"]})
    assert created.status_code == 422 and "name" in created.text
    assignment = api_next(base, tokens["eve"], campaign_id)
    answered = post_json(f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement", eve,
                         {"answer": {"choice": "a"}, "comment": f"c{bad}"})
    assert answered.status_code == 422 and "comment" in answered.text
    if bad == NUL:  # a form's bytes are decoded as UTF-8 with replacement: only a NUL gets through
        page = signed_in(base, "admin")
        form = {"csrf_token": csrf_of(page.get("/admin/campaigns/new")), "name": f"web{bad}", "task_types": "pairwise"}
        refused = page.post("/admin/campaigns", data=form)
        assert refused.status_code == 422 and "name: contains" in refused.text
    assert count(store, Item) == items_before  # nothing half-imported
    # The campaign still works: the next task and the export.
    assert httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/next", headers=eve).status_code == 200
    assert httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/judgements", headers=admin).status_code == 200


def test_the_cli_refuses_a_file_with_a_lone_surrogate_naming_line_and_field(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    rows = tmp_path / "prompts.jsonl"
    rows.write_text('{"prompt": "fine", "candidates": ["a", "b"]}\n{"prompt": "bad \\udfff", "candidates": ["a", "b"]}\n')
    runner = CliRunner()
    assert runner.invoke(cli(), ["feedback", "create-campaign", "c", "--db", url]).exit_code == 0
    refused = runner.invoke(cli(), ["feedback", "import", str(rows), "--campaign", "c", "--db", url])
    assert refused.exit_code == 2 and f"{rows}:2: field prompt: contains a lone surrogate (U+DFFF)" in refused.output
    assert "Traceback" not in refused.output


# ---------------------------------------------------------------- 3. numbers past a column's range


@pytest.mark.parametrize("huge", [2**31, 2**63, 10**30])
def test_ids_and_offsets_past_the_columns_range_get_422(world, huge):
    base, _, tokens, campaign_id = world
    admin = bearer(tokens["admin"])
    for url in (f"/api/v1/assignments/{huge}", f"/api/v1/campaigns/{huge}/judgements",
                f"/api/v1/campaigns/{campaign_id}/judgements?offset={huge}", f"/api/v1/judgements/mine?campaign_id={huge}"):
        assert httpx.get(f"{base}{url}", headers=admin).status_code == 422, url
    assert httpx.post(f"{base}/api/v1/campaigns/{huge}/next", headers=admin).status_code == 422
    page = signed_in(base, "admin")
    assert page.get(f"/tasks/{huge}").status_code == 422
    assert page.get(f"/admin/campaigns/{huge}").status_code == 422


@pytest.mark.parametrize("field, value", [("min_seconds", "NaN"), ("min_seconds", "Infinity"), ("min_seconds", "-1"),
                                          ("overlap", str(2**31)), ("scale_max", str(2**40)), ("name", json.dumps("x" * 129))])
def test_campaign_settings_out_of_range_get_422_on_both_databases(world, field, value):
    base, store, tokens, _ = world
    body = {"name": "n", "task_types": ["pairwise"]}
    raw = json.dumps(body)[:-1] + f', "{field}": {value}}}'  # NaN / Infinity as Python's json writes them
    response = httpx.post(f"{base}/api/v1/campaigns", headers={**bearer(tokens["admin"]), "content-type": "application/json"},
                          content=raw)
    assert response.status_code == 422 and field in response.text
    page = signed_in(base, "admin")
    form = {"csrf_token": csrf_of(page.get("/admin/campaigns/new")), "name": "form", "task_types": "pairwise",
            field: json.loads(value) if field == "name" else value}
    assert page.post("/admin/campaigns", data=form).status_code == 422
    with transaction(store) as session:
        assert [c.name for c in service.list_campaigns(session)] == ["c"]


def test_a_token_name_longer_than_its_column_is_refused_not_truncated(world):
    base, store, _, _ = world
    page = signed_in(base, "admin")
    csrf = csrf_of(page.get("/admin/users"))
    with transaction(store) as session:
        eve_id = service.user_by_name(session, "eve").id
    response = page.post(f"/admin/users/{eve_id}/tokens", data={"csrf_token": csrf, "name": "t" * 129})
    assert response.status_code == 422 and "name: 129 characters" in response.text
    with transaction(store) as session:
        assert all(len(token.name) <= 128 for token in service.list_tokens(session))
        assert len(service.list_tokens(session, eve_id)) == 1


# ---------------------------------------------------------------- 4. accounts


def test_accounts_are_managed_from_the_cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    runner = CliRunner()
    assert "password: expected 8" in runner.invoke(cli(), ["feedback", "create-user", "ana", "--password", "x", "--db", url]).output
    assert runner.invoke(cli(), ["feedback", "create-user", "ana", "--password", "first-pass", "--db", url]).exit_code == 0
    token = runner.invoke(cli(), ["feedback", "token", "ana", "--name", "laptop", "--db", url]).stdout.strip()
    with serving(url) as base:
        assert httpx.get(f"{base}/api/v1/campaigns", headers=bearer(token)).status_code == 200
        listed = runner.invoke(cli(), ["feedback", "tokens", "ana", "--db", url]).stdout
        assert "laptop" in listed and "never used" not in listed and "live" in listed  # last_used_at was written
        token_id = listed.split("\t")[0]
        assert runner.invoke(cli(), ["feedback", "revoke-token", token_id, "--db", url]).exit_code == 0
        assert httpx.get(f"{base}/api/v1/campaigns", headers=bearer(token)).status_code == 401
        assert "revoked" in runner.invoke(cli(), ["feedback", "tokens", "--db", url]).stdout
        browser = httpx.Client(base_url=base)
        assert sign_in(browser, "ana", "first-pass").status_code == 303
        assert runner.invoke(cli(), ["feedback", "set-password", "ana", "--password", "second-pass", "--db", url]).exit_code == 0
        assert browser.get("/home").status_code == 303  # signed out by the reset
        assert sign_in(httpx.Client(base_url=base), "ana", "first-pass").status_code == 401
        assert sign_in(httpx.Client(base_url=base), "ana", "second-pass").status_code == 303
        assert runner.invoke(cli(), ["feedback", "disable-user", "ana", "--db", url]).exit_code == 0
        assert sign_in(httpx.Client(base_url=base), "ana", "second-pass").status_code == 401
        assert runner.invoke(cli(), ["feedback", "enable-user", "ana", "--db", url]).exit_code == 0
        assert sign_in(httpx.Client(base_url=base), "ana", "second-pass").status_code == 303


def test_an_admin_disables_a_user_revokes_a_token_and_resets_a_password_from_the_pages(world):
    base, store, tokens, _ = world
    admin, eve_browser = signed_in(base, "admin"), signed_in(base, "eve")
    csrf = csrf_of(admin.get("/admin/users"))
    with transaction(store) as session:
        eve = service.user_by_name(session, "eve")
        eve_token = service.list_tokens(session, eve.id)[0]
    assert admin.post(f"/admin/tokens/{eve_token.id}/revoke", data={"csrf_token": csrf}).status_code == 200
    assert httpx.get(f"{base}/api/v1/campaigns", headers=bearer(tokens["eve"])).status_code == 401
    disabled = admin.post(f"/admin/users/{eve.id}/active", data={"csrf_token": csrf, "active": "false"})
    assert disabled.status_code == 200 and "disabled" in disabled.text
    assert eve_browser.get("/home").status_code == 303  # her session ended
    assert sign_in(httpx.Client(base_url=base), "eve").status_code == 401
    assert admin.post(f"/admin/users/{eve.id}/active", data={"csrf_token": csrf, "active": "true"}).status_code == 200
    short = admin.post(f"/admin/users/{eve.id}/password", data={"csrf_token": csrf, "password": "x"})
    assert short.status_code == 422 and "password: expected 8" in short.text
    assert admin.post(f"/admin/users/{eve.id}/password", data={"csrf_token": csrf, "password": "brand-new-pass"}).status_code == 200
    assert sign_in(httpx.Client(base_url=base), "eve", "brand-new-pass").status_code == 303
    with transaction(store) as session:
        admin_id = service.user_by_name(session, "admin").id
    last = admin.post(f"/admin/users/{admin_id}/active", data={"csrf_token": csrf, "active": "false"})
    assert last.status_code == 422 and "last active admin" in last.text


def test_a_user_changes_their_own_password(sqlite_world):
    base = sqlite_world[0]
    eve = signed_in(base, "eve")
    csrf = csrf_of(eve.get("/account"))
    wrong = eve.post("/account/password", data={"csrf_token": csrf, "current": "nope", "password": "another-pass"})
    assert wrong.status_code == 422 and "current password" in wrong.text
    assert eve.post("/account/password", data={"csrf_token": csrf, "current": PASSWORD, "password": "another-pass"}).status_code == 303
    assert eve.get("/home").status_code == 200  # this browser stays signed in
    assert sign_in(httpx.Client(base_url=base), "eve", "another-pass").status_code == 303


def test_api_tokens_record_when_they_were_last_used(world):
    base, store, tokens, _ = world
    assert httpx.get(f"{base}/api/v1/campaigns", headers=bearer(tokens["bob"])).status_code == 200
    with transaction(store) as session:
        used = {t.user.username: t.last_used_at for t in session.scalars(select(ApiToken))}
    assert used["bob"] is not None and used["eve"] is None


# ---------------------------------------------------------------- 5. the dashboard and writers


def test_a_long_read_does_not_make_a_sqlite_writer_wait(sqlite_url):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    reader, writer = make_read_session_factory(engine), make_session_factory(engine)
    wrote = threading.Event()

    def write() -> None:
        with transaction(writer) as session:
            service.create_user(session, "late", PASSWORD)
        wrote.set()

    with transaction(reader) as session:  # the dashboard's transaction, still open
        session.execute(text("SELECT count(*) FROM users")).scalar()
        thread = threading.Thread(target=write)
        thread.start()
        assert wrote.wait(timeout=10), "the writer waited for the reader"
    thread.join()


def test_the_campaign_report_is_cached_until_a_judgement_arrives(sqlite_world, monkeypatch):
    base, store, tokens, campaign_id = sqlite_world
    computed = []
    real = quality.campaign_report
    monkeypatch.setattr(quality, "campaign_report", lambda session, cid: computed.append(cid) or real(session, cid))
    cache = ReportCache()
    reader = make_read_session_factory(make_engine(sqlite_url_of(store)))
    with transaction(reader) as session:
        first = cache.get(session, campaign_id)
        assert cache.get(session, campaign_id) is first and computed == [campaign_id]
    assignment = api_next(base, tokens["eve"], campaign_id)
    httpx.post(f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement", headers=bearer(tokens["eve"]),
               json={"answer": {"choice": "a"}}).raise_for_status()
    with transaction(reader) as session:
        assert cache.get(session, campaign_id).judgements == first.judgements + 1 and len(computed) == 2


def sqlite_url_of(store) -> str:
    return str(store.kw["bind"].url)


# ---------------------------------------------------------------- 6. no state change on GET


def test_a_get_never_hands_out_a_task(world):
    base, store, _, campaign_id = world
    eve = signed_in(base, "eve")
    eve.post(f"/campaigns/{campaign_id}/guidelines", data={"csrf_token": csrf_of(eve.get("/home"))})
    before = count(store, Assignment)
    assert eve.get(f"/campaigns/{campaign_id}/next").status_code == 405
    assert count(store, Assignment) == before
    home = eve.get("/home").text
    assert f'<form method="post" action="/campaigns/{campaign_id}/next"' in home  # the button posts, with its token


# ---------------------------------------------------------------- 7. headers on errors, the docs


def test_a_500_carries_the_security_headers_and_no_internals(tmp_path):
    from fastapi.testclient import TestClient

    server_app = create_app(f"sqlite:///{tmp_path / 'no-schema.db'}")  # never upgraded: every query fails

    def broken() -> None:
        raise RuntimeError("secret internals")

    server_app.add_api_route("/api/v1/broken", broken)  # an error no handler knows, past every middleware
    with TestClient(server_app, raise_server_exceptions=False) as client:
        responses = [client.get("/healthz"), client.get("/api/v1/broken")]
    for response in responses:
        assert response.status_code == 500 and "no such table" not in response.text and "secret" not in response.text
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get_list(name) == [value], name


def test_the_docs_are_served_with_local_assets_under_their_own_policy(sqlite_world):
    base = sqlite_world[0]
    page = httpx.get(f"{base}/docs")
    assert page.status_code == 200 and page.headers["content-security-policy"] == DOCS_CSP
    assert "http" not in page.text.split("<body>")[0]  # nothing from another host
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs.js"):
        assert httpx.get(f"{base}{asset}").status_code == 200, asset


# ---------------------------------------------------------------- 8. the smaller ones


def test_a_csv_with_an_unterminated_quote_is_refused(sqlite_url):
    upgrade(sqlite_url)
    store = make_session_factory(make_engine(sqlite_url))
    data = b'prompt,candidates\nfirst,"[""a"", ""b""]"\n"second,[]\nthird,[]\n'
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"])
    with pytest.raises(DataError, match=r"p.csv:3: not valid CSV: unexpected end of data \(a quote opened"):
        with transaction(store) as session:
            imports.import_file(session, service.get_campaign(session, campaign.id), "p.csv", data)
    assert count(store, Item) == 0


def test_bad_cells_and_unknown_prompts_are_reported_together(sqlite_url):
    upgrade(sqlite_url)
    store = make_session_factory(make_engine(sqlite_url))
    with transaction(store) as session:
        campaign = service.create_campaign(session, "c", ["pairwise"])
    rows = [{"response": "ok", "prompt": "no such prompt"}, {"response": "", "prompt": "x"}]
    with pytest.raises(DataError) as refused, transaction(store) as session:
        imports.import_records(session, service.get_campaign(session, campaign.id), rows)
    assert "2 problem(s)" in str(refused.value) and "no item of campaign 'c'" in str(refused.value)


def test_export_out_pointing_at_a_file_is_one_line_of_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    runner = CliRunner()
    runner.invoke(cli(), ["feedback", "create-campaign", "c", "--db", url])
    taken = tmp_path / "exports"
    taken.write_text("not a folder")
    result = runner.invoke(cli(), ["feedback", "export", "--campaign", "c", "--format", "pairs", "--out", str(taken), "--db", url])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nothing to export" in result.output or "a file is there" in result.output


def test_the_empty_export_advice_fits_the_options_used():
    with_all = export._nothing_to_export("c", "pairs", "all", {})
    assert "aggregation 'all' (every" not in with_all and "collect more judgements" in with_all
    weighted = export._nothing_to_export("c", "pairs", "weighted", {"flagged_evaluator": 3})
    assert "export with aggregation 'all'" in weighted and "--exclude-flagged" in weighted


@pytest.mark.parametrize("ranks, message", [
    (["١", "2", "3"], "expected a whole number"), (["2", "3", "3"], "expected rank 1 for the best"),
    (["１", "2", "3"], "expected a whole number"),
])
def test_ranks_take_ascii_digits_and_start_at_one(sqlite_world, ranks, message):
    base, store, tokens, campaign_id = sqlite_world
    assignment = api_next(base, tokens["eve"], campaign_id, "ranking")
    shown = [c["id"] for c in assignment["candidates"]]
    response = httpx.post(f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement", headers=bearer(tokens["eve"]),
                          json={"answer": {"ranks": dict(zip(map(str, shown), ranks))}})
    assert response.status_code == 422 and message in response.text
    assert count(store, Judgement) == 0


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(sqlite_world):
    base, _, tokens, campaign_id = sqlite_world
    headers = {**bearer(tokens["admin"]), "content-type": "application/json"}
    started = time.monotonic()
    declared = httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/items", headers=headers,
                          content=b'{"rows": [' + b'"x",' * (MAX_BODY_BYTES // 4 + 1) + b'"x"]}')
    assert declared.status_code == 413

    def chunks():  # no Content-Length: the limit must hold on the stream too
        yield b'{"rows": ['
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 2):
            yield b'"x",' * (1 << 18)
        yield b'"x"]}'

    streamed = httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/items", headers=headers, content=chunks())
    assert streamed.status_code == 413 and time.monotonic() - started < 60


def test_unknown_query_parameters_and_body_fields_are_refused(sqlite_world):
    base, _, tokens, campaign_id = sqlite_world
    admin = bearer(tokens["admin"])
    misspelt = httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/judgements", params={"limt": 5}, headers=admin)
    assert misspelt.status_code == 422 and misspelt.json()["detail"][0]["loc"] == ["query", "limt"]
    extra = httpx.post(f"{base}/api/v1/campaigns", headers=admin, json={"name": "x", "task_types": ["pairwise"], "overlpa": 2})
    assert extra.status_code == 422 and "overlpa" in extra.text
