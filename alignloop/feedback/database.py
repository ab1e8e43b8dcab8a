"""Engines, sessions and schema upgrades for the feedback store.

SQLite is the zero-set-up default (one file); PostgreSQL (`postgresql+psycopg://...`) is for
teams. Both must take many concurrent writers without losing or duplicating a judgement:

* SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every
  transaction starts with `BEGIN IMMEDIATE`. SQLite's default deferred transaction takes the
  write lock only at its first write, and when two such transactions both read first and then
  both try to write, one fails at once with "database is locked" *without waiting* (waiting
  could deadlock). Taking the write lock up front makes writers queue on the busy timeout
  instead, which is what short web transactions want.
* Reading needs no lock at all: a read-only session (`make_read_session_factory`) starts with a
  plain `BEGIN`, so an admin's dashboard, however long its quality figures take, never makes a
  writer wait.
* PostgreSQL needs nothing special here; where a count must not race (how many evaluators an
  item already has, failed sign-ins), the service locks a row or takes an advisory lock.

The schema itself is created only by Alembic migrations (`upgrade`), never by `create_all`,
so a database made by `alignloop db upgrade` and one made by the tests are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DEFAULT_URL", "make_engine", "make_session_factory", "make_read_session_factory", "transaction", "upgrade",
    "alembic_config",
]

DEFAULT_URL = "sqlite:///feedback.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "alignloop_read_only"  # execution option of the engine behind read-only sessions
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # The driver's own transaction handling is turned off (isolation_level=None below) so
        # that the "begin" hook decides how each transaction starts.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill in WAL mode
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str = DEFAULT_URL) -> Engine:
    """An engine for `url` (SQLite file or PostgreSQL), set up for concurrent writers."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"isolation_level": None, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                          "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects returned by a service call stay readable after its commit.
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads: on SQLite their transactions take no write lock."""
    return sessionmaker(engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str):
    """An Alembic config pointing at the packaged migrations (works from an installed wheel)."""
    # lazy: alembic loads only to migrate a database, never on the web server's request path
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would read a '%' in a password as a format directive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str = DEFAULT_URL, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating the file for SQLite)."""
    # lazy: alembic loads only to migrate a database, never on the web server's request path
    from alembic import command

    command.upgrade(alembic_config(url), revision)
