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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things in place; batch mode copies the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; pass a database URL")
run_migrations_online()
