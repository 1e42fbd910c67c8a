"""The rows a group files, written together when the group is done.

Filing decides from the group's look-ups (:mod:`ingest.work.lookups`) what
each message becomes. Written message by message, that was four statements
(its ticket, its ticket message, its Message-ID, its entry's ``done``), each
a round trip to PostgreSQL: most of a worker's wall time, spent waiting on a
server that a second worker waits on the same way. Here the rows wait, and
:meth:`GroupRows.flush` writes them one statement per table for the whole
group, the entries' ``done`` with every lease token checked in the same
statement — all in the group's transaction, so a ticket message still exists
if and only if its entry is done.

A ticket or ticket message not yet written has a provisional id (negative)
that the group's later messages may already use — a reply threading onto a
ticket opened earlier in the group; the flush maps them to the ids the
database gave. Whatever must read the rows back (an event's snapshot of its
ticket, a duplicate's note naming its ticket message) flushes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from storage import mailqueue as queue
from storage.bulkinsert import compiled_insert, driver_cursor, new_row
from storage.lease import table_of
from storage.mailqueue import Claim
from storage.models import Attachment, KnownMessageId, Ticket, TicketMessage

_NEW_ATTACHMENTS = insert(table_of(Attachment))
_NEW_KNOWN = insert(table_of(KnownMessageId))


@dataclass
class GroupRows:
    """What the group has filed and not yet written, and the ids given so far."""

    tickets: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    known: list[dict[str, Any]] = field(default_factory=list)
    notes: list[tuple[Claim, str]] = field(default_factory=list)
    done: list[tuple[Claim, int | None]] = field(default_factory=list)
    ticket_ids: dict[int, int] = field(default_factory=dict)  # provisional → given
    message_ids: dict[int, int] = field(default_factory=dict)

    def new_ticket(self, row: dict[str, Any]) -> int:
        """A ticket to write; its provisional id."""
        self.tickets.append(row)
        return -(len(self.ticket_ids) + len(self.tickets))

    def new_message(self, row: dict[str, Any]) -> int:
        """A ticket message to write (its ``ticket_id`` may be provisional); its provisional id."""
        self.messages.append(row)
        return -(len(self.message_ids) + len(self.messages))

    def unwritten_ticket(self, ticket_id: int) -> dict[str, Any] | None:
        """The row of a ticket this group opened and has not written yet."""
        index = -ticket_id - len(self.ticket_ids) - 1
        return self.tickets[index] if ticket_id < 0 and index >= 0 else None

    def ticket_id(self, session: Session, ticket_id: int) -> int:
        """The id the database gave (writing the group's rows first if need be)."""
        if ticket_id < 0 and ticket_id not in self.ticket_ids:
            self.flush(session)
        return self.ticket_ids.get(ticket_id, ticket_id)

    def message_id(self, session: Session, message_id: int) -> int:
        """The id the database gave (writing the group's rows first if need be)."""
        if message_id < 0 and message_id not in self.message_ids:
            self.flush(session)
        return self.message_ids.get(message_id, message_id)

    def flush(self, session: Session) -> None:
        """Write what waits: one statement per table, the entries' ``done`` last
        (:func:`storage.mailqueue.finish_many` raises
        :class:`~storage.lease.LeaseLost` unless every lease is still ours)."""
        if self.tickets:
            self._given(session, Ticket, self.tickets, self.ticket_ids)
            self.tickets = []
        if self.messages:
            for row in self.messages:
                row["ticket_id"] = self.ticket_ids.get(row["ticket_id"], row["ticket_id"])
            self._given(session, TicketMessage, self.messages, self.message_ids)
            self.messages = []
        for rows, key, ids, statement in (
            (self.attachments, "ticket_message_id", self.message_ids, _NEW_ATTACHMENTS),
            (self.known, "ticket_id", self.ticket_ids, _NEW_KNOWN),
        ):
            if rows:
                for row in rows:
                    row[key] = ids.get(row[key], row[key])
                session.execute(statement, rows)
                rows.clear()
        queue.note_outcomes(session, self.notes)
        self.notes = []
        queue.finish_many(
            session,
            [(c, None if i is None else self.message_ids.get(i, i)) for c, i in self.done],
        )
        self.done = []

    @staticmethod
    def _given(
        session: Session, model: type[SQLModel], rows: list[dict[str, Any]], ids: dict[int, int]
    ) -> None:
        """Insert ``rows`` (one pipelined statement per table, see
        :mod:`storage.bulkinsert`), mapping their provisional ids to the ids
        given, in order."""
        connection = session.connection()
        with driver_cursor(connection) as cursor:
            given = compiled_insert(connection, model).run(
                cursor, [new_row(model, **row) for row in rows]
            )
        first = len(ids)
        ids.update((-(first + n + 1), i) for n, i in enumerate(given))
