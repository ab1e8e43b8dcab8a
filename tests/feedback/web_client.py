"""A client's view of the feedback app for the tests: the app served for real over a database
the test can also reach directly, a populated campaign, and sign-in as a browser does it."""

from __future__ import annotations

import re
from contextlib import contextmanager

import httpx
from sqlalchemy import func, select

from live_server import serving

from alignloop.feedback import security, service
from alignloop.feedback.database import make_engine, make_session_factory, transaction
from alignloop.feedback.models import Candidate, Item, Judgement

PASSWORD = "pw-123-long"


@contextmanager
def serving_with_store(db_url: str):
    """(base URL, session factory): the app served for real, and a way into its database."""
    with serving(db_url) as base:
        engine = make_engine(db_url)
        try:
            yield base, make_session_factory(engine)
        finally:
            engine.dispose()


def populate(store):
    """An admin, two evaluators (with API tokens), and a pairwise + ranking campaign of two
    items with three candidates each; (tokens by username, campaign id)."""
    with transaction(store) as session:
        service.create_user(session, "admin", PASSWORD, "admin")
        tokens = {}
        for name in ("eve", "bob"):
            user = service.create_user(session, name, PASSWORD)
            tokens[name] = security.issue_api_token(session, user, "test")
        tokens["admin"] = security.issue_api_token(session, service.user_by_name(session, "admin"), "test")
        campaign = service.create_campaign(session, "c", ["pairwise", "ranking"], guidelines="Be fair.")
        for index in range(2):
            session.add(Item(campaign_id=campaign.id, prompt=f"prompt {index}",
                             candidates=[Candidate(text=f"answer {index}.{k}", meta={}) for k in range(3)]))
    return tokens, campaign.id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_next(base, token, campaign_id, task_type="pairwise"):
    httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/acknowledge", headers=bearer(token)).raise_for_status()
    response = httpx.post(f"{base}/api/v1/campaigns/{campaign_id}/next", params={"task_type": task_type}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def judgement_count(store) -> int:
    with transaction(store) as session:
        return session.scalar(select(func.count()).select_from(Judgement))


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    """Post the sign-in form as a browser would: with the token its page put in the form."""
    csrf = csrf_of(client.get("/signin"))
    return client.post("/signin", data={"username": username, "password": password, "csrf_token": csrf})


def signed_in(base: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base)
    response = sign_in(client, username)
    assert response.status_code == 303, response.text
    return client


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
