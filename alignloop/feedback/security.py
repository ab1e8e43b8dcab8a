"""Passwords, browser sessions, CSRF tokens, API tokens and the sign-in rate limit.

* Passwords are hashed with argon2id (argon2-cffi's defaults). A sign-in for an unknown user
  still verifies against a dummy hash, so the reply time does not tell which usernames exist.
* Session ids and API tokens are random (`secrets`, 256 bits) and only their SHA-256 is stored:
  a leaked database does not let anyone sign in. A fast hash is enough here because the secret
  is random, unlike a password.
* Each browser session has its own CSRF token, rendered into every form and compared in
  constant time (`hmac.compare_digest`). Together with SameSite=Lax cookies this refuses forms
  posted from other sites.
* Failed sign-ins are rows in the database (`SignInAttempt`), so the limit holds across worker
  processes and restarts. Within `FAILURE_WINDOW`, attempts are refused after `MAX_FAILURES`
  failures for one username from one client, `MAX_ACCOUNT_FAILURES` for one username from any
  client (guessing from many addresses) and `MAX_CLIENT_FAILURES` from one client for any
  username (one password sprayed over many accounts). The check, the password verification and
  the recorded failure are one transaction holding a lock on the username and on the client
  (PostgreSQL advisory locks; SQLite's write lock is taken at BEGIN already), so parallel
  guesses queue and each sees the failures before it: 20 at once cannot all get through.
* The client is the connecting address. Behind a reverse proxy the server must be told which
  proxies to believe (`alignloop serve --forwarded-allow-ips`); otherwise an `X-Forwarded-For`
  header is ignored, so a client cannot give itself a fresh allowance by inventing one.
* API tokens record when they were last used (at most one write per `TOKEN_TOUCH_INTERVAL`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from alignloop.feedback.models import ApiToken, SignInAttempt, User, WebSession, utcnow

__all__ = [
    "MAX_FAILURES", "MAX_ACCOUNT_FAILURES", "MAX_CLIENT_FAILURES", "FAILURE_WINDOW", "SESSION_LIFETIME",
    "TOKEN_TOUCH_INTERVAL", "SignInFailed", "SignInRateLimited",
    "hash_password", "verify_password", "new_secret", "secret_digest", "csrf_matches",
    "sign_in", "start_web_session", "web_session_for", "end_web_session",
    "issue_api_token", "api_token_for", "user_for_api_token", "token_needs_touch", "touch_api_token", "as_utc",
]

MAX_FAILURES = 5  # one username from one client
MAX_ACCOUNT_FAILURES = 10  # one username from any client
MAX_CLIENT_FAILURES = 20  # one client, any username
FAILURE_WINDOW = timedelta(minutes=5)
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a real password; compared against for unknown usernames")


class SignInFailed(Exception):
    """Wrong username or password (deliberately not saying which)."""


class SignInRateLimited(Exception):
    """Too many failed sign-ins for this username from this client; try again later."""


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("a password cannot be empty")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_secret() -> str:
    """A random URL-safe secret (256 bits) for a session cookie, API token or CSRF token."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What the database stores for a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def as_utc(moment: datetime) -> datetime:
    """A stored datetime as an aware UTC one: SQLite hands back naive datetimes even for
    timezone=True columns (they were stored as UTC); PostgreSQL returns aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _stored_key(value: str) -> str:
    """A username or client address as the attempts table keeps it: printable ASCII (a NUL or a
    lone surrogate would not store), at most the column's 64 characters. Valid usernames and IP
    addresses are unchanged."""
    return ascii(value)[1:-1][:64]


def _lock_sign_in(session: Session, username: str, client: str) -> None:
    """Serialise attempts on one username and on one client until the transaction ends. Always
    the username first, so two attempts cannot wait for each other's second lock."""
    if session.get_bind().dialect.name == "postgresql":
        # Two-key locks: namespace 1 for usernames, 2 for clients, so the two never collide.
        for space, key in ((1, username), (2, client)):
            session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"), {"space": space, "key": key})


def _recent_failures(session: Session, now: datetime, **match: str) -> int:
    query = select(func.count()).select_from(SignInAttempt).where(SignInAttempt.at > now - FAILURE_WINDOW)
    for column, value in match.items():
        query = query.where(getattr(SignInAttempt, column) == value)
    return session.scalar(query) or 0


def _rate_limited(session: Session, username: str, client: str, now: datetime) -> bool:
    return (_recent_failures(session, now, username=username, client=client) >= MAX_FAILURES
            or _recent_failures(session, now, username=username) >= MAX_ACCOUNT_FAILURES
            or _recent_failures(session, now, client=client) >= MAX_CLIENT_FAILURES)


def sign_in(session: Session, username: str, password: str, client: str) -> User:
    """The active user with these credentials; raises SignInRateLimited or SignInFailed.

    The caller commits in both cases (a failure must stay counted) and runs nothing else in the
    transaction. The rate limit is checked before the password, so a blocked client learns
    nothing from further guesses; a success clears that client's failures for the username.
    """
    now = utcnow()
    key, client = _stored_key(username), _stored_key(client)
    _lock_sign_in(session, key, client)
    if _rate_limited(session, key, client, now):
        raise SignInRateLimited(f"too many failed sign-ins; try again in {FAILURE_WINDOW.seconds // 60} minutes")
    user = session.scalar(select(User).where(User.username == key)) if key == username else None
    password_ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not password_ok or not user.active:
        session.add(SignInAttempt(username=key, client=client, at=now))
        raise SignInFailed("wrong username or password")
    session.execute(delete(SignInAttempt).where(SignInAttempt.username == key, SignInAttempt.client == client))
    return user


def start_web_session(session: Session, user: User) -> tuple[str, WebSession]:
    """(cookie secret, session row) for a user who just signed in."""
    secret = new_secret()
    row = WebSession(
        user_id=user.id, session_hash=secret_digest(secret), csrf_token=new_secret(),
        expires_at=utcnow() + SESSION_LIFETIME,
    )
    session.add(row)
    session.flush()
    return secret, row


def web_session_for(session: Session, cookie_secret: str | None) -> WebSession | None:
    """The live session a cookie belongs to (not expired, user still active), else None."""
    if not cookie_secret:
        return None
    row = session.scalar(select(WebSession).where(WebSession.session_hash == secret_digest(cookie_secret)))
    if row is None or as_utc(row.expires_at) <= utcnow() or not row.user.active:
        return None
    return row


def end_web_session(session: Session, cookie_secret: str | None) -> None:
    if cookie_secret:
        session.execute(delete(WebSession).where(WebSession.session_hash == secret_digest(cookie_secret)))


def issue_api_token(session: Session, user: User, name: str) -> str:
    """A new API token for `user`; the secret is returned once and only its hash is kept."""
    secret = new_secret()
    session.add(ApiToken(user_id=user.id, name=name, token_hash=secret_digest(secret)))
    session.flush()
    return secret


def api_token_for(session: Session, secret: str | None) -> ApiToken | None:
    """The live token (not revoked, its user active) a bearer secret belongs to, else None."""
    if not secret:
        return None
    return session.scalar(
        select(ApiToken).join(User, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == secret_digest(secret), ApiToken.revoked.is_(False), User.active.is_(True))
    )


def user_for_api_token(session: Session, secret: str | None) -> User | None:
    """The active user a (not revoked) bearer token belongs to, else None (one query per request)."""
    token = api_token_for(session, secret)
    return token.user if token else None


def token_needs_touch(token: ApiToken, now: datetime | None = None) -> bool:
    """Whether `last_used_at` is older than `TOKEN_TOUCH_INTERVAL` (a write is then due)."""
    return token.last_used_at is None or as_utc(token.last_used_at) < (now or utcnow()) - TOKEN_TOUCH_INTERVAL


def touch_api_token(session: Session, token_id: int, now: datetime | None = None) -> None:
    """Record that a token was used now (unless a concurrent request just did)."""
    now = now or utcnow()
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - TOKEN_TOUCH_INTERVAL),
    ).values(last_used_at=now))
