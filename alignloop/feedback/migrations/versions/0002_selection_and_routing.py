"""Active selection and routing: each item's selection score, whether it was held back, and who
may judge it (anyone, only people, only AI judges); which accounts are AI judges.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, which SQLite and PostgreSQL both do in place (no table copy); the
    # defaults keep every existing item assignable to anyone and every account a person.
    op.add_column("items", sa.Column("selection_score", sa.Float(), nullable=True))
    op.add_column("items", sa.Column("held_back", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("items", sa.Column("audience", sa.String(length=8), nullable=False, server_default="any"))
    op.add_column("users", sa.Column("is_ai_judge", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_ai_judge")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("audience")
        batch.drop_column("held_back")
        batch.drop_column("selection_score")
