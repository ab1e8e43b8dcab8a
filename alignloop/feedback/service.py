"""What the web pages, the REST API and the CLI do to the feedback store, in one place.

Every function takes an open `Session` and leaves committing to the caller, so one request is
one transaction (`database.transaction`): an error anywhere rolls all of it back. Errors are
typed by what the caller should answer: `NotFound` (404), `Forbidden` (403), `Conflict` (409),
`InvalidRequest` / `InvalidAnswer` (422).

Concurrency: `next_assignment` counts how many evaluators hold each item; two requests counting
at once could both hand out the last slot. SQLite transactions are serialised already
(`BEGIN IMMEDIATE`); on PostgreSQL the campaign row is locked (`FOR UPDATE`) first. The unique
constraints of the schema (one assignment per item, evaluator and task; one judgement per
assignment; one client key per evaluator) are the last line: a duplicate cannot be stored.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from alignloop.data.storable import unstorable_reason
from alignloop.errors import UserError
from alignloop.feedback.assignment import (
    MAX_TEXT_CHARS, InvalidAnswer, ItemLoad, check_text, display_order, pick_item, validate_answer,
)
from alignloop.feedback.models import (
    ApiToken, Assignment, AssignmentStatus, Campaign, Candidate, GuidelineAck, Item, Judgement, Role, TaskType, User,
    WebSession, utcnow,
)
from alignloop.feedback.security import as_utc, hash_password, issue_api_token

__all__ = [
    "GOLD_RATE", "ASSIGNMENT_TTL", "NotFound", "Forbidden", "Conflict", "InvalidRequest", "InvalidAnswer",
    "GuidelinesNotRead", "CampaignProgress", "create_user", "user_by_name", "create_campaign", "campaign_by_name",
    "get_campaign", "list_campaigns", "campaign_progress", "evaluator_done_count", "acknowledge_guidelines",
    "has_read_guidelines", "next_assignment", "assignment_for", "submit_judgement", "list_judgements",
    "MIN_PASSWORD_LENGTH", "MAX_ID", "MAX_OVERLAP", "SCALE_LIMIT", "MAX_MIN_SECONDS", "MAX_NAME_CHARS",
    "MAX_TOKEN_NAME_CHARS", "MAX_AXES", "MAX_AXIS_CHARS", "get_user", "list_users", "set_password",
    "set_user_active", "issue_token", "list_tokens", "revoke_token", "ping", "campaign_fingerprint", "evaluator_campaigns",
]

GOLD_RATE = 0.1  # share of tasks drawn from gold items while regular ones remain
# An open assignment older than this no longer holds its slot (should its evaluator still answer
# it, the item ends with one judgement more than `overlap`: better than an abandoned tab blocking it).
ASSIGNMENT_TTL = timedelta(hours=1)
T = TypeVar("T")
_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_CHARS = 1024  # argon2 hashes any length; this bounds the work one request can cause
# Bounds of what a request may ask for, so that no value reaches a column that cannot hold it:
MAX_ID = 2**31 - 1  # ids, limits and offsets: PostgreSQL's integer (SQLite's goes to 2^63 - 1)
MAX_OVERLAP = 1000  # evaluators per item
SCALE_LIMIT = 1000  # rating scales within -1000..1000
MAX_MIN_SECONDS = 86_400.0
MAX_NAME_CHARS = 128  # Campaign.name
MAX_TOKEN_NAME_CHARS = 128  # ApiToken.name
MAX_AXES, MAX_AXIS_CHARS = 20, 64


class NotFound(LookupError, UserError):
    pass


class Forbidden(PermissionError, UserError):
    pass


class Conflict(UserError):
    pass


class GuidelinesNotRead(Conflict):
    """The evaluator must acknowledge the campaign's guidelines before a first task."""


class InvalidRequest(ValueError, UserError):
    pass


def create_user(session: Session, username: str, password: str, role: Role | str = Role.evaluator,
                is_ai_judge: bool = False) -> User:
    if not _USERNAME.fullmatch(username):
        raise InvalidRequest(f"username {username!r}: expected 1-64 letters, digits or _ . @ -")
    if role not in {r.value for r in Role}:
        raise InvalidRequest(f"role {role!r}: expected one of {', '.join(r.value for r in Role)}")
    _check_password(password)
    if user_by_name(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=Role(role), active=True,
                is_ai_judge=is_ai_judge)
    session.add(user)
    session.flush()
    return user


def _check_password(password: Any) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidRequest(f"password: expected {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_CHARS} characters")
    if reason := unstorable_reason(password):
        raise InvalidRequest(f"password: {reason}")


def user_by_name(session: Session, username: str) -> User | None:
    if not _USERNAME.fullmatch(username):
        return None  # no stored name has other characters; a NUL would be refused by PostgreSQL
    return session.scalar(select(User).where(User.username == username))


def _row(session: Session, model: type[T], row_id: int, what: str, **options: Any) -> T:
    """The row with this id, or NotFound; an id past the columns' range is simply not there
    (the database would refuse to compare with it)."""
    row = session.get(model, row_id, **options) if 1 <= row_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"no {what} {row_id}")
    return row


def get_user(session: Session, user_id: int) -> User:
    return _row(session, User, user_id, "user")


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def set_password(session: Session, user: User, password: str) -> None:
    """A new password (an admin's reset or the user's own change); other browsers are signed out."""
    _check_password(password)
    user.password_hash = hash_password(password)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.flush()


def set_user_active(session: Session, user: User, active: bool) -> None:
    """Disable (or enable again) an account. A disabled user's browser sessions end at once and
    their API tokens stop working (`security` checks `User.active`); their judgements stay."""
    if not active and user.role == Role.admin and user.active:
        others = session.scalar(select(func.count()).where(User.role == Role.admin, User.active.is_(True), User.id != user.id))
        if not others:
            raise Conflict(f"{user.username!r} is the last active admin; make another admin first")
    user.active = active
    if not active:
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.flush()


def issue_token(session: Session, user: User, name: str) -> str:
    """A new API token for `user` (the secret, shown once)."""
    name = check_text(name, "name", MAX_TOKEN_NAME_CHARS).strip() or "token"
    return issue_api_token(session, user, name)


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: int) -> ApiToken:
    token = _row(session, ApiToken, token_id, "API token")
    token.revoked = True
    session.flush()
    return token


def ping(session: Session) -> None:
    """One trivial query: the database answers (the health check)."""
    session.execute(select(Campaign.id).limit(1)).all()


def _check_campaign_settings(
    name: str, task_types: list[str], overlap: int, scale_min: int, scale_max: int, guidelines: str, min_seconds: float,
    axes: list[str],
) -> None:
    for field, text in (("name", name), ("guidelines", guidelines), *(("rubric_axes", axis) for axis in axes)):
        if reason := unstorable_reason(text):
            raise InvalidRequest(f"{field}: {reason}")
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"name: expected 1-{MAX_NAME_CHARS} characters")
    if len(guidelines) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"guidelines: {len(guidelines)} characters, more than the limit of {MAX_TEXT_CHARS}")
    if len(axes) > MAX_AXES or any(len(axis) > MAX_AXIS_CHARS for axis in axes):
        raise InvalidRequest(f"rubric_axes: expected at most {MAX_AXES} axes of at most {MAX_AXIS_CHARS} characters")
    if not (math.isfinite(min_seconds) and 0 <= min_seconds <= MAX_MIN_SECONDS):
        raise InvalidRequest(f"min_seconds: expected a number from 0 to {MAX_MIN_SECONDS:g}, got {min_seconds}")
    unknown = [t for t in task_types if t not in {k.value for k in TaskType}]
    if not task_types or unknown:
        raise InvalidRequest(f"task_types: expected one or more of {', '.join(k.value for k in TaskType)}, got {task_types}")
    if not 1 <= overlap <= MAX_OVERLAP:
        raise InvalidRequest(f"overlap: expected 1 to {MAX_OVERLAP} evaluators per item, got {overlap}")
    if not -SCALE_LIMIT <= scale_min < scale_max <= SCALE_LIMIT:
        raise InvalidRequest(f"scale: expected -{SCALE_LIMIT} <= scale_min < scale_max <= {SCALE_LIMIT}, got {scale_min}..{scale_max}")


def create_campaign(
    session: Session, name: str, task_types: list[str], *, overlap: int = 3, rubric_axes: list[str] | None = None,
    scale_min: int = 1, scale_max: int = 7, guidelines: str = "", min_seconds: float = 3.0,
    created_by: User | None = None,
) -> Campaign:
    name, task_types = name.strip(), [str(getattr(t, "value", t)) for t in task_types]
    axes = [axis.strip() for axis in rubric_axes or [] if axis.strip()]
    _check_campaign_settings(name, task_types, overlap, scale_min, scale_max, guidelines, min_seconds, axes)
    if campaign_by_name(session, name) is not None:
        raise Conflict(f"campaign {name!r} already exists")
    campaign = Campaign(
        name=name, task_types=list(dict.fromkeys(task_types)), overlap=overlap, rubric_axes=axes,
        scale_min=scale_min, scale_max=scale_max, guidelines=guidelines, min_seconds=min_seconds,
        created_by=created_by.id if created_by else None,
    )
    session.add(campaign)
    session.flush()
    return campaign


def campaign_by_name(session: Session, name: str) -> Campaign | None:
    return session.scalar(select(Campaign).where(Campaign.name == name))


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    return _row(session, Campaign, campaign_id, "campaign")


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))


@dataclass(frozen=True)
class CampaignProgress:
    items: int
    gold_items: int
    judgements: dict[str, int]  # task type -> judgements stored
    target: int  # regular items x overlap: judgements wanted per task type


def campaign_progress(session: Session, campaign: Campaign) -> CampaignProgress:
    in_campaign = (Item.campaign_id == campaign.id, Item.held_back.is_(False))  # held-back items are never judged
    items = session.scalar(select(func.count()).where(*in_campaign)) or 0
    gold = session.scalar(select(func.count()).where(*in_campaign, Item.is_gold)) or 0
    counts = dict(session.execute(
        select(Judgement.task_type, func.count()).where(Judgement.campaign_id == campaign.id).group_by(Judgement.task_type)
    ).all())
    judgements = {task: counts.get(TaskType(task), 0) for task in campaign.task_types}
    return CampaignProgress(items, gold, judgements, (items - gold) * campaign.overlap)


def _refuse_if_assigned(session: Session, campaign: Campaign, items: Sequence[Item], why: str) -> None:
    """A `Conflict` naming the first of `items` someone has been given: what the store decided
    about who may judge it can no longer change."""
    started = session.scalars(select(Assignment.item_id).where(
        Assignment.item_id.in_([item.id for item in items])).limit(1)).first()
    if started is not None:
        raise Conflict(f"item {started} of campaign {campaign.name!r} has been assigned; {why}")


def record_selection(session: Session, campaign: Campaign, scores: Mapping[int, float | None],
                     chosen: Collection[int]) -> int:
    """Store active selection's verdict on a campaign's regular items: each item's score (None:
    not scored) and, for every item not in `chosen`, `held_back` (never assigned). Refused once
    an item that would be held back has been assigned: its judgements would be orphaned.
    Returns how many items were held back."""
    items = session.scalars(select(Item).where(Item.campaign_id == campaign.id, Item.is_gold.is_(False))).all()
    unknown = set(scores) - {item.id for item in items}
    if unknown:
        raise InvalidRequest(f"items {sorted(unknown)[:5]} are not regular items of campaign {campaign.name!r}")
    chosen = set(chosen)
    held = [item for item in items if item.id not in chosen]
    _refuse_if_assigned(session, campaign, held, "it cannot be held back")
    for item in items:
        item.selection_score = scores.get(item.id)
        item.held_back = item.id not in chosen
    session.flush()
    return len(held)


def record_routing(session: Session, campaign: Campaign, to_people: Collection[int]) -> dict[str, int]:
    """Route a campaign's regular items that are not held back: those in `to_people` to people
    only, the rest to AI judges only (gold items stay open to both: a judge's gold accuracy is
    measured like anyone's). Refused once a regular item has been assigned. Returns the counts."""
    items = session.scalars(select(Item).where(Item.campaign_id == campaign.id, Item.is_gold.is_(False),
                                               Item.held_back.is_(False))).all()
    to_people = set(to_people)
    unknown = to_people - {item.id for item in items}
    if unknown:
        raise InvalidRequest(f"items {sorted(unknown)[:5]} are not open regular items of campaign {campaign.name!r}")
    _refuse_if_assigned(session, campaign, items, "routing comes before judging")
    for item in items:
        item.audience = "people" if item.id in to_people else "judges"
    session.flush()
    return {"people": len(to_people), "judges": len(items) - len(to_people)}


def campaign_fingerprint(session: Session, campaign_id: int) -> tuple[int, ...]:
    """Changes whenever a judgement or an item is added to the campaign (neither is ever edited):
    (judgements, last judgement id, items, last item id)."""
    judgements = session.execute(select(func.count(), func.coalesce(func.max(Judgement.id), 0))
                                 .where(Judgement.campaign_id == campaign_id)).one()
    items = session.execute(select(func.count(), func.coalesce(func.max(Item.id), 0))
                            .where(Item.campaign_id == campaign_id)).one()
    return (*judgements, *items)


def evaluator_done_count(session: Session, campaign_id: int, user_id: int) -> int:
    query = select(func.count()).where(Judgement.campaign_id == campaign_id, Judgement.evaluator_id == user_id)
    return session.scalar(query) or 0


def has_read_guidelines(session: Session, user_id: int, campaign_id: int) -> bool:
    query = select(GuidelineAck.id).where(GuidelineAck.user_id == user_id, GuidelineAck.campaign_id == campaign_id)
    return session.scalar(query) is not None


def evaluator_campaigns(session: Session, user: User) -> list[dict[str, Any]]:
    """Every campaign with the evaluator's count of judgements ("done") and whether they
    acknowledged its guidelines ("read")."""
    return [{"campaign": c, "done": evaluator_done_count(session, c.id, user.id),
             "read": has_read_guidelines(session, user.id, c.id)} for c in list_campaigns(session)]


def acknowledge_guidelines(session: Session, user: User, campaign_id: int) -> None:
    get_campaign(session, campaign_id)
    if not has_read_guidelines(session, user.id, campaign_id):
        session.add(GuidelineAck(user_id=user.id, campaign_id=campaign_id))
        session.flush()


def _open_assignment(session: Session, campaign_id: int, user: User, task_type: TaskType | None) -> Assignment | None:
    query = select(Assignment).where(
        Assignment.campaign_id == campaign_id, Assignment.evaluator_id == user.id,
        Assignment.status == AssignmentStatus.open,
    )
    if task_type is not None:
        query = query.where(Assignment.task_type == task_type)
    return session.scalars(query.order_by(Assignment.id).limit(1)).first()


def _item_loads(session: Session, campaign_id: int, user: User, task_type: TaskType) -> list[ItemLoad]:
    """Every item of the campaign this evaluator has not had for `task_type`, with its load.

    One query of plain tuples: this runs on every request for a new task, so it must stay cheap
    for campaigns of thousands of items (candidate ids are loaded only for the item picked).
    """
    live = or_(Assignment.status == AssignmentStatus.done, Assignment.created_at > utcnow() - ASSIGNMENT_TTL)
    of_task = (Assignment.campaign_id == campaign_id, Assignment.task_type == task_type)
    taken = (select(Assignment.item_id, func.count().label("n")).where(*of_task, live)
             .group_by(Assignment.item_id).subquery())
    candidates = (select(Candidate.item_id, func.count().label("n")).join(Item).where(Item.campaign_id == campaign_id)
                  .group_by(Candidate.item_id).subquery())
    seen = select(Assignment.item_id).where(*of_task, Assignment.evaluator_id == user.id)
    rows = session.execute(
        select(Item.id, Item.is_gold, func.coalesce(candidates.c.n, 0), func.coalesce(taken.c.n, 0))
        .outerjoin(candidates, candidates.c.item_id == Item.id).outerjoin(taken, taken.c.item_id == Item.id)
        .where(Item.campaign_id == campaign_id, Item.held_back.is_(False), Item.id.not_in(seen),
               Item.audience.in_(("any", "judges" if user.is_ai_judge else "people"))).order_by(Item.id)
    )
    return [ItemLoad(item_id, is_gold, candidate_count, taken_count) for item_id, is_gold, candidate_count, taken_count in rows]


def next_assignment(
    session: Session, campaign_id: int, user: User, task_type: TaskType | str | None = None,
    rng: random.Random | None = None, seed: int | None = None,
) -> Assignment | None:
    """The evaluator's open assignment in this campaign, else a new one, else None (all done).

    Without `task_type`, the campaign's task types are tried in their listed order. The item and
    the display order are drawn from `rng`; else, with a `seed`, from `assignment_rng`
    (reproducible simulations); else unseeded.
    """
    campaign = _row(session, Campaign, campaign_id, "campaign", with_for_update=True)
    if task_type is not None and str(getattr(task_type, "value", task_type)) not in campaign.task_types:
        raise InvalidRequest(f"task_type {task_type!r}: this campaign has {', '.join(campaign.task_types)}")
    if not has_read_guidelines(session, user.id, campaign_id):
        raise GuidelinesNotRead(f"read and acknowledge the guidelines of campaign {campaign.name!r} first")
    wanted = [TaskType(task_type)] if task_type is not None else [TaskType(t) for t in campaign.task_types]
    for task in wanted:
        resumed = _open_assignment(session, campaign_id, user, task)
        if resumed is not None:
            return resumed
    rng = rng or (assignment_rng(session, seed, campaign_id, user) if seed is not None else random.Random())
    for task in wanted:
        chosen = pick_item(_item_loads(session, campaign_id, user, task), task, campaign.overlap, rng, GOLD_RATE)
        if chosen is not None:
            candidate_ids = tuple(session.scalars(
                select(Candidate.id).where(Candidate.item_id == chosen.item_id).order_by(Candidate.id)))
            now = utcnow()
            assignment = Assignment(
                campaign_id=campaign_id, item_id=chosen.item_id, evaluator_id=user.id, task_type=task,
                shown_order=display_order(task, candidate_ids, rng), created_at=now, opened_at=now,
            )
            session.add(assignment)
            session.flush()
            return assignment
    return None


def assignment_rng(session: Session, seed: int, campaign_id: int, user: User) -> random.Random:
    """A generator for the evaluator's next assignment that depends only on the seed, the
    campaign, the evaluator and how many assignments they already hold there: the same
    requests in the same order draw the same items and display orders, whatever the clock or
    the process (a server restarted mid-campaign continues the same sequence)."""
    held = session.scalar(select(func.count()).where(Assignment.campaign_id == campaign_id,
                                                     Assignment.evaluator_id == user.id)) or 0
    return random.Random(f"{seed}/{campaign_id}/{user.id}/{held}")


def assignment_for(session: Session, assignment_id: int, user: User) -> Assignment:
    """An assignment its evaluator may see (admins may look at any); others get Forbidden."""
    assignment = _row(session, Assignment, assignment_id, "assignment")
    if assignment.evaluator_id != user.id and user.role != Role.admin:
        raise Forbidden(f"assignment {assignment_id} belongs to another evaluator")
    return assignment


def _replay(session: Session, user: User, client_key: str, assignment_id: int) -> Judgement | None:
    """The judgement already stored under this client key (a retried request), if any."""
    stored = session.scalar(select(Judgement).where(Judgement.evaluator_id == user.id, Judgement.client_key == client_key))
    if stored is not None and stored.assignment_id != assignment_id:
        raise Conflict(f"client_key {client_key!r} was already used for assignment {stored.assignment_id}")
    return stored


def submit_judgement(
    session: Session, assignment_id: int, user: User, answer: Any, *, comment: str = "",
    client_key: str | None = None, via: str = "web",
) -> tuple[Judgement, bool]:
    """(judgement, created). Retrying with the same `client_key` returns the stored judgement.

    The assignment row is locked first, so of two concurrent submissions the second sees the
    first one's judgement (a replay when the key matches, a Conflict otherwise).
    """
    if client_key is not None and not (isinstance(client_key, str) and 1 <= len(client_key) <= 64
                                       and unstorable_reason(client_key) is None):
        raise InvalidRequest("client_key: expected 1-64 characters")
    assignment = _row(session, Assignment, assignment_id, "assignment", with_for_update=True, populate_existing=True)
    if assignment.evaluator_id != user.id:
        raise Forbidden(f"assignment {assignment_id} belongs to another evaluator")
    if client_key and (stored := _replay(session, user, client_key, assignment_id)) is not None:
        return stored, False
    if assignment.status != AssignmentStatus.open:
        raise Conflict(f"assignment {assignment_id} is already {assignment.status.value}")
    campaign = assignment.item.campaign
    normalised = validate_answer(
        assignment.task_type, answer, list(assignment.shown_order), campaign.rubric_axes,
        (campaign.scale_min, campaign.scale_max),
    )
    comment = check_text(comment, "comment")
    now = utcnow()
    opened = as_utc(assignment.opened_at) if assignment.opened_at else None
    judgement = Judgement(
        assignment_id=assignment.id, campaign_id=assignment.campaign_id, item_id=assignment.item_id,
        evaluator_id=user.id, task_type=assignment.task_type, answer=normalised,
        shown_order=list(assignment.shown_order), comment=comment, opened_at=opened, submitted_at=now,
        duration_ms=int((now - opened).total_seconds() * 1000) if opened else None,
        client_key=client_key or None, via=via,
    )
    assignment.status = AssignmentStatus.done
    session.add(judgement)
    session.flush()
    return judgement, True


def list_judgements(
    session: Session, *, campaign_id: int | None = None, evaluator_id: int | None = None,
    limit: int = 1000, offset: int = 0,
) -> list[Judgement]:
    query = select(Judgement).order_by(Judgement.id).limit(limit).offset(offset)
    if campaign_id is not None:
        query = query.where(Judgement.campaign_id == campaign_id)
    if evaluator_id is not None:
        query = query.where(Judgement.evaluator_id == evaluator_id)
    return list(session.scalars(query))
