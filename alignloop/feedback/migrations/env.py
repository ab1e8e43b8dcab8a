"""Alembic environment: runs migrations online against the URL that `database.upgrade` passes in,
through `make_engine` so SQLite gets the same pragmas (WAL, foreign keys) as the app."""

from __future__ import annotations

from alembic import context

from alignloop.feedback.database import make_engine
from alignloop.feedback.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode copies a table and drops the old one, and with foreign keys on, SQLite
            # drops a table by deleting its rows: ON DELETE CASCADE would empty every table
            # that points at it (candidates, assignments, judgements). SQLite's own recipe for
            # schema changes: keys off (outside a transaction, where the pragma is not a no-op),
            # change, then check that every reference still resolves. Through the driver's
            # connection: SQLAlchemy's would begin a transaction first.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things in place; batch mode copies the table instead.
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:  # raising here rolls the whole migration back
                    raise RuntimeError(f"the migration left {len(broken)} rows pointing at nothing, e.g. {broken[0]}")
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; pass a database URL")
run_migrations_online()
