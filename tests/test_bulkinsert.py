"""Rows inserted on the driver's cursor are the rows SQLAlchemy would insert, and
its errors read as SQLAlchemy's do.

The batch files a group's tickets and ticket messages this way and reads the
ids back in order (a reply later in the group names a ticket opened earlier);
a database outage on this path must still be our trouble (temporary) and a
refused row the row's, exactly as on SQLAlchemy's own statements.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from policy.errors import StorageRefused, StorageUnavailable
from storage.bulkinsert import compiled_insert, driver_cursor, new_row
from storage.engine import classify, make_engine
from storage.models import Ticket, TicketStatus, aware
from storage.schema import prepare
from tests.support.stores import SQLITE_ONLY

WHEN = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def _tickets(count: int) -> list[dict[str, object]]:
    return [
        new_row(Ticket, mailbox="support@example.com", subject=f"Ticket {n}",
                requester=f"customer{n}@example.net", status=TicketStatus.OPEN,
                created_at=WHEN, updated_at=WHEN)
        for n in range(count)
    ]  # fmt: skip


def test_the_ids_come_back_in_the_order_of_the_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    prepare(engine)
    try:
        with engine.begin() as connection, driver_cursor(connection) as cursor:
            ids = compiled_insert(connection, Ticket).run(cursor, _tickets(300))
        assert len(set(ids)) == 300
        with Session(engine) as session:
            stored = {t.id: t for t in session.scalars(select(Ticket))}
        assert [stored[i].subject for i in ids] == [f"Ticket {n}" for n in range(300)]
        first = stored[ids[0]]
        assert first.status == TicketStatus.OPEN  # through the column type's bind processor
        assert aware(first.created_at) == WHEN  # the instant, whatever the session's zone
    finally:
        engine.dispose()


@SQLITE_ONLY
def test_driver_errors_are_classified_as_sqlalchemys_are(db_url: str) -> None:
    engine = make_engine(db_url)
    prepare(engine)
    try:
        with engine.begin() as connection, driver_cursor(connection) as cursor:
            [ticket_id] = compiled_insert(connection, Ticket).run(cursor, _tickets(1))
        # The same primary key again: the row is refused, the database is fine.
        with (
            pytest.raises(DBAPIError) as refused,  # SQLAlchemy's, not the driver's own
            engine.begin() as connection,
            driver_cursor(connection) as cursor,
        ):
            cursor.execute("INSERT INTO tickets (id, mailbox, subject, requester, status, "
                           "created_at, updated_at) SELECT id, mailbox, subject, requester, "
                           "status, created_at, updated_at FROM tickets WHERE id = ?",
                           (ticket_id,))  # fmt: skip
        assert isinstance(classify(refused.value), StorageRefused)
        # A table that is not there (a database restored from elsewhere): our trouble.
        with (
            pytest.raises(DBAPIError) as away,
            engine.begin() as connection,
            driver_cursor(connection) as cursor,
        ):
            cursor.execute("SELECT 1 FROM no_such_table")
        assert isinstance(classify(away.value), StorageUnavailable)
    finally:
        engine.dispose()
