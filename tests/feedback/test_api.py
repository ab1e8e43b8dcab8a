"""The web app over real HTTP: a uvicorn server on a free port, httpx as the client.

Checks what the issue asks to be proven: unauthenticated writes get 401, another evaluator's
assignment 403, a forged or missing CSRF token 403, a retried submission with the same
client_key is stored once, bad answers and uploads 422 with the reason, sign-in is rate
limited (429), cookies are HttpOnly and SameSite=Lax, and the OpenAPI docs are served."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select

from alignloop.feedback import service
from alignloop.feedback.database import transaction
from alignloop.feedback.models import Candidate, Item, Judgement
from alignloop.web import SESSION_COOKIE

from web_client import PASSWORD, api_next, bearer, csrf_of, judgement_count, sign_in, signed_in


# ---------------------------------------------------------------- authentication


def test_unauthenticated_writes_get_401(world):
    base, store, tokens, campaign_id = world
    assignment = api_next(base, tokens["eve"], campaign_id)
    body = {"answer": {"choice": "a"}}
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic ZXZlOnB3"}):
        response = httpx.post(f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement", json=body, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert httpx.post(f"{base}/api/v1/campaigns", json={"name": "x", "task_types": ["pairwise"]}).status_code == 401
    assert httpx.post(f"{base}/tasks/{assignment['assignment_id']}", data={"choice": "a"}).status_code == 401
    assert httpx.get(f"{base}/home").headers["location"] == "/signin"  # pages send a browser to sign in
    assert judgement_count(store) == 0


def test_another_evaluators_assignment_gets_403(world):
    base, store, tokens, campaign_id = world
    assignment = api_next(base, tokens["eve"], campaign_id)
    url = f"{base}/api/v1/assignments/{assignment['assignment_id']}"
    assert httpx.get(url, headers=bearer(tokens["eve"])).json()["prompt"] == assignment["prompt"]
    assert httpx.get(url, headers=bearer(tokens["bob"])).status_code == 403
    response = httpx.post(f"{url}/judgement", json={"answer": {"choice": "a"}}, headers=bearer(tokens["bob"]))
    assert response.status_code == 403 and "another evaluator" in response.json()["detail"]
    bob = signed_in(base, "bob")
    page = bob.get(f"/tasks/{assignment['assignment_id']}")
    assert page.status_code == 403 and "answer 0." not in page.text
    csrf = csrf_of(bob.get("/home"))
    assert bob.post(f"/tasks/{assignment['assignment_id']}", data={"csrf_token": csrf, "choice": "a"}).status_code == 403
    assert judgement_count(store) == 0


def test_non_admins_get_403_on_admin_routes(sqlite_world):
    base, _, tokens, campaign_id = sqlite_world
    eve = bearer(tokens["eve"])
    assert httpx.post(f"{base}/api/v1/campaigns", json={"name": "x", "task_types": ["pairwise"]}, headers=eve).status_code == 403
    assert httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/judgements", headers=eve).status_code == 403
    assert signed_in(base, "eve").get("/admin").status_code == 403


def test_forged_or_missing_csrf_token_is_refused(world):
    base, store, _, campaign_id = world
    eve = signed_in(base, "eve")
    guidelines = eve.get(f"/campaigns/{campaign_id}/guidelines")
    assert "Be fair." in guidelines.text
    real = csrf_of(guidelines)
    for form in ({"csrf_token": real[:-1] + ("A" if real[-1] != "A" else "B")}, {}):
        assert eve.post(f"/campaigns/{campaign_id}/guidelines", data=form).status_code == 403
    # Asking for a task still sends eve back to the guidelines; without the token, nothing happens.
    assert eve.post(f"/campaigns/{campaign_id}/next", data={"csrf_token": real}).headers["location"].endswith("/guidelines")
    assert eve.post(f"/campaigns/{campaign_id}/next", data={}).status_code == 403
    acknowledged = eve.post(f"/campaigns/{campaign_id}/guidelines", data={"csrf_token": real})
    assert acknowledged.status_code == 303 and "/tasks/" in acknowledged.headers["location"]  # straight to a task
    task = eve.get(acknowledged.headers["location"])
    action = re.search(r'action="(/tasks/\d+)"', task.text).group(1)
    assert eve.post(action, data={"csrf_token": "forged", "choice": "a"}).status_code == 403
    assert judgement_count(store) == 0
    assert eve.post(action, data={"csrf_token": real, "choice": "a"}).status_code == 303
    assert judgement_count(store) == 1


def test_session_cookie_is_httponly_and_samesite_lax(sqlite_world):
    base = sqlite_world[0]
    response = sign_in(httpx.Client(base_url=base), "eve")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_the_sign_in_form_needs_its_csrf_token(sqlite_world):
    base = sqlite_world[0]
    client = httpx.Client(base_url=base)
    client.get("/signin")  # sets the cookie half of the token
    for token in ("", "forged"):
        response = client.post("/signin", data={"username": "eve", "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 403 and SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert sign_in(client, "eve").status_code == 303


def test_sign_in_is_rate_limited(sqlite_world):
    client = httpx.Client(base_url=sqlite_world[0])
    statuses = [sign_in(client, "eve", "wrong").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert sign_in(client, "eve").status_code == 429
    assert sign_in(httpx.Client(base_url=sqlite_world[0]), "bob").status_code == 303  # other users are not blocked


# ---------------------------------------------------------------- submitting over the API


def test_a_retry_with_the_same_client_key_is_stored_once(world):
    base, store, tokens, campaign_id = world
    assignment = api_next(base, tokens["eve"], campaign_id)
    url = f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement"
    body = {"answer": {"choice": "b", "strength": 2}, "client_key": "retry-1"}
    first = httpx.post(url, json=body, headers=bearer(tokens["eve"]))
    second = httpx.post(url, json=body, headers=bearer(tokens["eve"]))
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json()
    shown = [c["id"] for c in assignment["candidates"]]
    assert first.json()["answer"] == {"choice": "b", "better": shown[1], "strength": 2}
    assert first.json()["shown_order"] == shown and first.json()["via"] == "api"
    assert judgement_count(store) == 1
    without_key = httpx.post(url, json={"answer": {"choice": "a"}}, headers=bearer(tokens["eve"]))
    assert without_key.status_code == 409 and judgement_count(store) == 1


def test_invalid_answers_get_422_with_the_reason(sqlite_world):
    base, store, tokens, campaign_id = sqlite_world
    assignment = api_next(base, tokens["eve"], campaign_id, "ranking")
    url = f"{base}/api/v1/assignments/{assignment['assignment_id']}/judgement"
    first = assignment["candidates"][0]["id"]
    response = httpx.post(url, json={"answer": {"ranks": {str(first): 1}}}, headers=bearer(tokens["eve"]))
    assert response.status_code == 422 and "ranks: expected a rank for exactly the shown candidates" in response.json()["detail"]
    ranks = {str(c["id"]): rank for c, rank in zip(assignment["candidates"], (1, 1, 3))}
    assert httpx.post(url, json={"answer": {"ranks": ranks}}, headers=bearer(tokens["eve"])).status_code == 201
    assert judgement_count(store) == 1


def test_next_assignment_needs_the_guidelines_read_and_reports_when_done(sqlite_world):
    base, _, tokens, campaign_id = sqlite_world
    url = f"{base}/api/v1/campaigns/{campaign_id}/next"
    response = httpx.post(url, headers=bearer(tokens["eve"]))
    assert response.status_code == 409 and "guidelines" in response.json()["detail"]
    for _ in range(2):  # two items: two pairwise tasks, then nothing for pairwise
        task = api_next(base, tokens["eve"], campaign_id)
        httpx.post(f"{base}/api/v1/assignments/{task['assignment_id']}/judgement", json={"answer": {"choice": "tie"}},
                   headers=bearer(tokens["eve"])).raise_for_status()
    assert httpx.post(url, params={"task_type": "pairwise"}, headers=bearer(tokens["eve"])).status_code == 204
    mine = httpx.get(f"{base}/api/v1/judgements/mine", headers=bearer(tokens["eve"])).json()
    assert [j["answer"]["choice"] for j in mine] == ["tie", "tie"]


def test_admin_creates_a_campaign_imports_items_and_lists_judgements(sqlite_world):
    base, _, tokens, _ = sqlite_world
    admin = bearer(tokens["admin"])
    created = httpx.post(f"{base}/api/v1/campaigns", headers=admin,
                         json={"name": "api", "task_types": ["rating"], "rubric_axes": ["helpful"], "scale_max": 5})
    assert created.status_code == 201 and created.json()["rubric_axes"] == ["helpful"]
    campaign_id = created.json()["id"]
    bad = httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/items", headers=admin,
                     json={"rows": [{"prompt": "fine", "candidates": ["a"]}, {"prompt": "x", "colour": "red"}]})
    assert bad.status_code == 422 and "body: item 1: unknown column 'colour'" in bad.json()["detail"]
    good = httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/items", headers=admin,
                      json={"rows": [{"prompt": "fine", "candidates": ["a"]}]})
    assert good.json() == {"items": 1, "candidates": 1}
    task = api_next(base, tokens["eve"], campaign_id, "rating")
    assert task["rubric_axes"] == ["helpful"] and (task["scale_min"], task["scale_max"]) == (1, 5)
    httpx.post(f"{base}/api/v1/assignments/{task['assignment_id']}/judgement", headers=bearer(tokens["eve"]),
               json={"answer": {"scores": {"helpful": 4}}}).raise_for_status()
    listed = httpx.get(f"{base}/api/v1/campaigns/{campaign_id}/judgements", headers=admin).json()
    assert [(j["task_type"], j["answer"]) for j in listed] == [("rating", {"scores": {"helpful": 4}})]
    assert httpx.post(f"{base}/api/v1/campaigns", headers=admin, json={"name": "api", "task_types": ["rating"]}).status_code == 409


def test_openapi_documents_the_api(sqlite_world):
    base = sqlite_world[0]
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert {"/api/v1/campaigns", "/api/v1/campaigns/{campaign_id}/next", "/api/v1/assignments/{assignment_id}/judgement"} <= set(paths)
    assert not any(path.startswith("/admin") for path in paths)
    assert httpx.get(f"{base}/docs").status_code == 200


# ---------------------------------------------------------------- admin pages


def test_a_bad_upload_is_refused_with_line_and_reason(sqlite_world):
    base, store, _, campaign_id = sqlite_world
    admin = signed_in(base, "admin")
    csrf = csrf_of(admin.get(f"/admin/campaigns/{campaign_id}"))
    upload = b'{"prompt": "fine", "candidates": ["a", "b"]}\n{"prompt": "broken"\n'
    response = admin.post(f"/admin/campaigns/{campaign_id}/import", data={"csrf_token": csrf},
                          files={"file": ("more.jsonl", upload, "application/json")})
    assert response.status_code == 422 and "more.jsonl:2: not valid JSON" in response.text
    with transaction(store) as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 2  # only the world's two items
    ok = admin.post(f"/admin/campaigns/{campaign_id}/import", data={"csrf_token": csrf},
                    files={"file": ("more.jsonl", upload.splitlines()[0], "application/json")})
    assert ok.status_code == 200 and "Imported 1 items and 2 candidates" in ok.text


def test_admin_creates_a_campaign_with_a_file_in_one_step(sqlite_world):
    base, store, _, _ = sqlite_world
    admin = signed_in(base, "admin")
    csrf = csrf_of(admin.get("/admin/campaigns/new"))
    form = {"csrf_token": csrf, "name": "web", "task_types": ["pairwise", "rating"], "overlap": "2",
            "rubric_axes": "helpful, honest", "scale_min": "1", "scale_max": "5", "guidelines": "Read <b>carefully</b>"}
    bad = admin.post("/admin/campaigns", data=form, files={"file": ("p.csv", b"prompt,oops\nx,1\n", "text/csv")})
    assert bad.status_code == 422 and "p.csv:2: unknown column &#39;oops&#39;" in bad.text
    with transaction(store) as session:
        assert service.campaign_by_name(session, "web") is None  # the campaign went with its bad file
    good = admin.post("/admin/campaigns", data=form, files={"file": ("p.csv", b"prompt\nx\ny\n", "text/csv")})
    assert good.status_code == 303
    dashboard = admin.get(good.headers["location"])
    assert "2 items (0 gold)" in dashboard.text and "Read &lt;b&gt;carefully&lt;/b&gt;" in dashboard.text
    with transaction(store) as session:
        campaign = service.campaign_by_name(session, "web")
        assert (campaign.task_types, campaign.overlap, campaign.rubric_axes) == (["pairwise", "rating"], 2, ["helpful", "honest"])


def test_rating_comment_and_edit_pages_store_their_answers(sqlite_world):
    base, store, _, _ = sqlite_world
    with transaction(store) as session:
        campaign = service.create_campaign(session, "forms", ["rating", "comment", "edit"], rubric_axes=["helpful", "honest"],
                                           scale_min=1, scale_max=5)
        session.add(Item(campaign_id=campaign.id, prompt="Explain tides.", candidates=[Candidate(text="The moon.", meta={})]))
    eve = signed_in(base, "eve")
    csrf = csrf_of(eve.get(f"/campaigns/{campaign.id}/guidelines"))
    location = eve.post(f"/campaigns/{campaign.id}/guidelines", data={"csrf_token": csrf}).headers["location"]
    forms = {
        "rating": {"score_helpful": "2", "score_honest": "5"},
        "comment": {"text": "Too short."},
        "edit": {"text": "The moon's gravity pulls the oceans."},
    }
    for expected_task in ("rating", "comment", "edit"):
        page = eve.get(location)
        assert f"<small>{expected_task}</small>" in page.text
        action = re.search(r'action="(/tasks/\d+)"', page.text).group(1)
        fields = {"csrf_token": csrf, **forms[expected_task]}
        if expected_task == "edit":
            assert ">The moon.</textarea>" in page.text  # prefilled with the response being edited
            fields["candidate_id"] = re.search(r'name="candidate_id" value="(\d+)"', page.text).group(1)
        if expected_task == "rating":
            refused = eve.post(action, data={**fields, "score_honest": "6"})
            assert refused.status_code == 422 and "scores.honest: expected a whole number from 1 to 5, got 6" in refused.text
        answered = eve.post(action, data=fields)
        assert answered.status_code == 303
        location = answered.headers["location"]  # the next task, or the campaign's "done" page
    with transaction(store) as session:
        answers = {j.task_type.value: j.answer for j in session.scalars(select(Judgement))}
        candidate_id = session.scalar(select(Candidate.id).where(Candidate.text == "The moon."))
    assert answers == {
        "rating": {"scores": {"helpful": 2, "honest": 5}},
        "comment": {"text": "Too short."},
        "edit": {"candidate_id": candidate_id, "text": "The moon's gravity pulls the oceans."},
    }
    assert location.endswith(f"/campaigns/{campaign.id}/done") and "Nothing left for you" in eve.get(location).text
