"""quarantine action note: the operator's own words for a release or delete

Revision ID: 5c1e0a7d2b94
Revises: 73af9ce6beea
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e0a7d2b94"
down_revision: str | Sequence[str] | None = "73af9ce6beea"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quarantine_actions") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quarantine_actions") as batch:
        batch.drop_column("note")
