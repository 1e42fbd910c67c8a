"""oauth tokens and held replies

Revision ID: 754b4f9cf23a
Revises: b7d41c9e2a10
Create Date: 2026-12-01 10:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "754b4f9cf23a"
down_revision: str | Sequence[str] | None = "b7d41c9e2a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_tokens",
        sa.Column("mailbox", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("credentials", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("lease_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The reply state is a native enum there; SQLite stores the name as text.
        op.execute("ALTER TYPE replystate ADD VALUE IF NOT EXISTS 'HELD'")
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "held_credentials", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.drop_column("held_credentials")
    # PostgreSQL cannot drop an enum value; a held reply goes back to failed.
    op.execute("UPDATE replies SET state = 'FAILED' WHERE state = 'HELD'")
    op.drop_table("oauth_tokens")
