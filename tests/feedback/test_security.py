"""Passwords, secrets, CSRF comparison, browser sessions, API tokens and the sign-in rate limit,
against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from alignloop.feedback import security, service
from alignloop.feedback.database import make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.models import ApiToken, SignInAttempt, User, WebSession, utcnow


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        service.create_user(session, "ana", "correct horse")
    yield factory
    engine.dispose()


def user(session, name="ana") -> User:
    return session.scalar(select(User).where(User.username == name))


def test_passwords_are_argon2_hashed_and_verified():
    stored = security.hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert security.verify_password(stored, "correct horse")
    assert not security.verify_password(stored, "correct horsE")
    assert not security.verify_password("not a hash", "correct horse")
    assert security.hash_password("correct horse") != stored  # salted
    with pytest.raises(ValueError):
        security.hash_password("")


def test_secrets_are_random_and_stored_as_sha256():
    assert security.secret_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    first, second = security.new_secret(), security.new_secret()
    assert first != second and len(first) >= 43  # 32 random bytes, URL-safe base64


def test_csrf_tokens_compare_exactly():
    assert security.csrf_matches("token-1", "token-1")
    assert not security.csrf_matches("token-1", "token-2")
    assert not security.csrf_matches("token-1", "")
    assert not security.csrf_matches("token-1", None)


def test_sign_in_checks_the_password(store):
    with transaction(store) as session:
        assert security.sign_in(session, "ana", "correct horse", "10.0.0.1").username == "ana"
    for name, password in [("ana", "wrong"), ("nobody", "correct horse")]:
        with store() as session:
            with pytest.raises(security.SignInFailed, match="wrong username or password"):
                security.sign_in(session, name, password, "10.0.0.1")


def test_sign_in_is_rate_limited_per_username_and_client(store):
    for _ in range(security.MAX_FAILURES):
        with store() as session:
            with pytest.raises(security.SignInFailed):
                security.sign_in(session, "ana", "guess", "10.0.0.1")
            session.commit()
    with store() as session:
        # Even the right password is refused now, so guessing on learns nothing.
        with pytest.raises(security.SignInRateLimited):
            security.sign_in(session, "ana", "correct horse", "10.0.0.1")
        # Another client is not blocked by this one's failures.
        assert security.sign_in(session, "ana", "correct horse", "10.0.0.2").username == "ana"
    with transaction(store) as session:  # once the window has passed, the client may try again
        session.execute(update(SignInAttempt).values(at=utcnow() - security.FAILURE_WINDOW - timedelta(seconds=1)))
    with transaction(store) as session:
        assert security.sign_in(session, "ana", "correct horse", "10.0.0.1").username == "ana"
        remaining = session.scalar(select(func.count()).select_from(SignInAttempt).where(SignInAttempt.client == "10.0.0.1"))
    assert remaining == 0  # a success clears the failures


def test_web_sessions_store_only_a_hash_and_expire(store):
    with transaction(store) as session:
        secret, row = security.start_web_session(session, user(session))
    assert row.session_hash == security.secret_digest(secret) != secret
    with transaction(store) as session:
        found = security.web_session_for(session, secret)
        assert found.user.username == "ana" and found.csrf_token == row.csrf_token
        assert security.web_session_for(session, secret + "x") is None
        assert security.web_session_for(session, None) is None
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    with transaction(store) as session:
        assert security.web_session_for(session, secret) is None


def test_signing_out_and_deactivation_end_sessions(store):
    with transaction(store) as session:
        first, _ = security.start_web_session(session, user(session))
        second, _ = security.start_web_session(session, user(session))
        security.end_web_session(session, first)
    with transaction(store) as session:
        assert security.web_session_for(session, first) is None
        assert security.web_session_for(session, second) is not None
        user(session).active = False
    with transaction(store) as session:
        assert security.web_session_for(session, second) is None


def test_api_tokens_identify_their_user_until_revoked(store):
    with transaction(store) as session:
        secret = security.issue_api_token(session, user(session), "script")
        stored = session.scalar(select(ApiToken.token_hash))
    assert stored == security.secret_digest(secret)
    with transaction(store) as session:
        assert security.user_for_api_token(session, secret).username == "ana"
        assert security.user_for_api_token(session, "forged") is None
        assert security.user_for_api_token(session, "") is None
        session.execute(update(ApiToken).values(revoked=True))
    with transaction(store) as session:
        assert security.user_for_api_token(session, secret) is None
