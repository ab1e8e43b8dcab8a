"""The store as the web routes use it: short transactions, read-only where nothing is written,
and the admin dashboard's quality report cached until new judgements arrive."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from alignloop.feedback import quality, service
from alignloop.feedback.database import make_engine, make_read_session_factory, make_session_factory, transaction
from alignloop.feedback.reliability import Reliability, campaign_reliability

__all__ = ["WebStore", "ReportCache"]

T = TypeVar("T")


@dataclass
class ReportCache:
    """`quality.campaign_report` and the gold-free reliability model per campaign, recomputed
    only when the campaign's judgements or items changed (`service.campaign_fingerprint`): ~3 s
    for 30,000 judgements, on every load of the dashboard otherwise. One per app (per worker)."""

    reports: dict[int, tuple[tuple[int, ...], quality.CampaignQuality]] = field(default_factory=dict)
    reliabilities: dict[int, tuple[tuple[int, ...], Reliability]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, session: Session, campaign_id: int) -> quality.CampaignQuality:
        return self._cached(self.reports, session, campaign_id, quality.campaign_report)

    def reliability(self, session: Session, campaign_id: int) -> Reliability:
        return self._cached(self.reliabilities, session, campaign_id, campaign_reliability)

    def _cached(self, table: dict[int, tuple[tuple[int, ...], Any]], session: Session, campaign_id: int,
                compute: Callable[[Session, int], T]) -> T:
        fingerprint = service.campaign_fingerprint(session, campaign_id)
        with self.lock:
            cached = table.get(campaign_id)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        value = compute(session, campaign_id)
        with self.lock:
            table[campaign_id] = (fingerprint, value)
        return value


class WebStore:
    """Transactions for route handlers: `write` (retried when a concurrent request won a race)
    and `read` (on SQLite it takes no write lock, so a slow read never makes a writer wait)."""

    def __init__(self, db_url: str, assignment_seed: int | None = None):
        engine = make_engine(db_url)
        self.write_factory: sessionmaker[Session] = make_session_factory(engine)
        self.read_factory: sessionmaker[Session] = make_read_session_factory(engine)
        self.assignment_seed = assignment_seed
        self.reports = ReportCache()

    def write(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """Run `work` in one transaction; retry when a concurrent request won a race (a unique
        constraint, or a PostgreSQL deadlock). Every unit of work is safe to repeat: a judgement
        by its client key, an assignment by resuming the open one."""
        for attempt in range(attempts):
            try:
                with transaction(self.write_factory) as session:
                    return work(session)
            except (IntegrityError, OperationalError):
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def read(self, work: Callable[[Session], T]) -> T:
        with transaction(self.read_factory) as session:
            return work(session)

    def session(self) -> Session:
        """A session whose transaction the caller commits itself (sign-in keeps its failures)."""
        return self.write_factory()

    def dashboard(self, session: Session, campaign_id: int) -> dict[str, Any]:
        campaign = service.get_campaign(session, campaign_id)
        return {"campaign": campaign, "progress": service.campaign_progress(session, campaign),
                "report": self.reports.get(session, campaign_id),
                "reliability": self.reports.reliability(session, campaign_id)}
