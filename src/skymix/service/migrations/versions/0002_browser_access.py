"""browser access: an application's public key and allowed origins

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

Live rooms (issue 12): browsers join rooms with an application's public key from the origins it
allows (or with a room token, which needs no table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "browser_access",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.String(length=32), nullable=False),
        sa.Column("origins", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.app_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id"),
        sa.UniqueConstraint("public_key"),
    )


def downgrade() -> None:
    raise NotImplementedError("skymix's migrations only go forward: a database is never dropped")
