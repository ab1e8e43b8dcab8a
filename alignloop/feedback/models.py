"""The feedback database: who judged what, when, what they were shown, in which order, how long
it took. SQLAlchemy 2 ORM; the same schema on SQLite (default, one file) and PostgreSQL.

Campaign ─┬─ Item (a prompt; gold items carry the known answer) ── Candidate (a response)
          └─ Assignment (one item, one evaluator, one task type, the display order) ── Judgement

* A judgement is never edited or deleted: it is what the evaluator said, with the order the
  candidates were shown in (`shown_order`, candidate ids left to right / top to bottom), when
  the assignment was opened and submitted, and the duration. Exports and quality checks derive
  everything from these rows.
* `Assignment (item_id, evaluator_id, task_type)` is unique — nobody sees an item twice for a
  task — and an assignment has at most one judgement (`Judgement.assignment_id` unique), so a
  retried submission cannot store a duplicate. `Judgement.client_key` (unique per evaluator)
  makes API submissions idempotent: a client that retries after a lost reply gets the stored
  judgement back.
* Secrets are stored hashed: passwords (argon2), API tokens and session ids (SHA-256).

This module imports no torch: the web process stays light.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Role(str, enum.Enum):
    admin = "admin"
    evaluator = "evaluator"


class TaskType(str, enum.Enum):
    pairwise = "pairwise"  # A / B / tie / both bad, optional strength
    ranking = "ranking"  # order K responses, ties allowed
    rating = "rating"  # Likert score per rubric axis
    comment = "comment"  # free text about the responses
    edit = "edit"  # edit a response or write the ideal one (becomes SFT data)


class AssignmentStatus(str, enum.Enum):
    open = "open"
    done = "done"
    expired = "expired"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # An LLM judge's account: an evaluator like any other, but routing (`Item.audience`) can
    # keep an item for people or for judges.
    is_ai_judge: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A signed-in browser: the cookie holds the secret, the table its hash and the CSRF token."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()


class SignInAttempt(Base):
    """Failed sign-ins, for the rate limit (kept in the database so it holds across workers)."""

    __tablename__ = "sign_in_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    guidelines: Mapped[str] = mapped_column(Text, default="")  # markdown-free plain text, shown escaped
    task_types: Mapped[list[Any]] = mapped_column(JSON)  # [TaskType.value, ...]
    overlap: Mapped[int] = mapped_column(Integer, default=3)  # evaluators per item and task type
    rubric_axes: Mapped[list[Any]] = mapped_column(JSON, default=list)  # ["helpful", "honest", "harmless"]
    scale_min: Mapped[int] = mapped_column(Integer, default=1)
    scale_max: Mapped[int] = mapped_column(Integer, default=7)
    min_seconds: Mapped[float] = mapped_column(Float, default=3.0)  # faster answers are flagged as implausible
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    items: Mapped[list["Item"]] = relationship(back_populates="campaign", cascade="all, delete-orphan")


class Item(Base):
    """A prompt to judge, with its candidate responses. Gold items carry the known answer
    (`gold`: e.g. {"pairwise": {"better": <candidate id>}}), mixed in to measure accuracy.

    Active selection (`feedback/selection.py`) scores more items than people will judge:
    `selection_score` is what the reward model stood to learn from the item (None: not scored),
    and an item it did not choose is `held_back`: kept with its candidates, never assigned.
    Routing sets `audience`: "any" evaluator, only "people", or only AI "judges"."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[Any] = mapped_column(JSON)  # str or chat messages, as in the data layer
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(255), default="")  # file:line it was imported from
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    selection_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    held_back: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    audience: Mapped[str] = mapped_column(String(8), default="any", server_default="any")

    campaign: Mapped[Campaign] = relationship(back_populates="items")
    candidates: Mapped[list["Candidate"]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="Candidate.id"
    )


class Candidate(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(255), default="")  # what wrote it ("" for imported)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    item: Mapped[Item] = relationship(back_populates="candidates")


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "evaluator_id", "task_type", name="uq_assignment_once"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    evaluator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    task_type: Mapped[TaskType] = mapped_column(Enum(TaskType, native_enum=False, length=16))
    shown_order: Mapped[list[Any]] = mapped_column(JSON)  # candidate ids as displayed (A/B randomised)
    status: Mapped[AssignmentStatus] = mapped_column(
        Enum(AssignmentStatus, native_enum=False, length=16), default=AssignmentStatus.open
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    item: Mapped[Item] = relationship()
    evaluator: Mapped[User] = relationship()


class Judgement(Base):
    """What an evaluator answered. `answer` by task type (candidate ids, never positions):
    pairwise {"choice": "a"|"b"|"tie"|"both_bad", "better": id|None, "strength": 1..3|None};
    ranking {"ranks": {id: rank}} (1 = best, equal ranks are ties); rating {"scores": {axis: n}};
    comment {"text": ...}; edit {"candidate_id": id|None, "text": ideal response}."""

    __tablename__ = "judgements"
    __table_args__ = (UniqueConstraint("evaluator_id", "client_key", name="uq_judgement_client_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    evaluator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    task_type: Mapped[TaskType] = mapped_column(Enum(TaskType, native_enum=False, length=16))
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    shown_order: Mapped[list[Any]] = mapped_column(JSON)  # copied from the assignment: what was on screen
    comment: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # idempotency key
    via: Mapped[str] = mapped_column(String(16), default="web")  # web | api


class GuidelineAck(Base):
    """An evaluator has read a campaign's guidelines (shown before their first task)."""

    __tablename__ = "guideline_acks"
    __table_args__ = (UniqueConstraint("user_id", "campaign_id", name="uq_guideline_ack"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
