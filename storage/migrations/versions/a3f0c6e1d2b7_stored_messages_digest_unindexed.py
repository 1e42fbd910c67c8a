"""stored_messages.digest unindexed: no query looks a message up by its digest

Revision ID: a3f0c6e1d2b7
Revises: d4dcff350ce8
Create Date: 2026-12-01 22:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "a3f0c6e1d2b7"
down_revision: str | Sequence[str] | None = "d4dcff350ce8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_stored_messages_digest", table_name="stored_messages")


def downgrade() -> None:
    op.create_index("ix_stored_messages_digest", "stored_messages", ["digest"], unique=False)
