"""queue outcome: why a processed entry made no new ticket message

Revision ID: b7d41c9e2a10
Revises: 5c1e0a7d2b94
Create Date: 2026-12-01 09:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d41c9e2a10"
down_revision: str | Sequence[str] | None = "5c1e0a7d2b94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue") as batch:
        batch.add_column(sa.Column("outcome", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queue") as batch:
        batch.drop_column("outcome")
