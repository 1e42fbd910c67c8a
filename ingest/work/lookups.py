"""What filing asks the database before it writes, asked once for a whole group.

Before it writes anything, filing a message asks: is this very mail already
on a ticket (a duplicate), is its Message-ID one we sent (our own mail coming
back), which ticket holds a message it answers or reports on, and is such a
message still waiting in the queue. Asked message by message they were most
of the batch's statements and most of its CPU; here each question is one
query for the group (:meth:`GroupLookups.fetch`), answered from memory, and
what the group files is added as it goes (:meth:`GroupLookups.filed`), so
the second message of a thread filed in the same transaction finds the first.

The queries run in the order that keeps them race-free on PostgreSQL, where
each statement sees the latest commits:

1. the advisory locks of the group's (mailbox, Message-ID) pairs, in one
   statement and in a fixed order: a worker filing another delivery of the
   same mail waits for our commit, and two workers never wait for each other;
2. the unfiled queue entries holding a message the group answers — before 3,
   so that an original filed between the two questions is seen by 3;
3. the Message-IDs on record;
4. the ticket messages already holding the group's Message-IDs — after 1.

SQLite needs no lock: its writers are serial (every transaction begins
IMMEDIATE).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, TextClause, bindparam, select, text
from sqlalchemy.orm import Session

from ingest.work.grouprows import GroupRows
from policy.message.parsed import ParsedMessage
from storage.lease import table_of
from storage.mailqueue import Claim
from storage.models import (
    KnownMessageId,
    QueueEntry,
    QueueState,
    StoredMessage,
    Ticket,
    TicketMessage,
)

_KNOWN = table_of(KnownMessageId)
_MESSAGES = table_of(TicketMessage)
_TICKETS = table_of(Ticket)
_QUEUE = table_of(QueueEntry)
_STORED = table_of(StoredMessage)

# An IN list this long at most per statement (SQLite allows 32,766 variables;
# a message may name hundreds of References).
_CHUNK = 500

_KNOWN_IDS = select(
    _KNOWN.c.mailbox, _KNOWN.c.message_id, _KNOWN.c.ticket_id, _KNOWN.c.direction
).where(_KNOWN.c.message_id.in_(bindparam("ids", expanding=True)))
_FILED = (
    select(_TICKETS.c.mailbox, _MESSAGES.c.message_id, _MESSAGES.c.digest, _MESSAGES.c.id)
    .join(_TICKETS, _TICKETS.c.id == _MESSAGES.c.ticket_id)
    .where(_MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)))
)
# Narrowed by the stored messages' Message-ID alone, the rest checked on the
# rows found: asked for the mailbox or the state too, SQLite walks every entry
# with that mailbox or state (a backlog of 60,000 made this most of the
# writer's time), a cost that grows with the store.
_UNFILED = (
    select(_QUEUE.c.id, _QUEUE.c.mailbox, _QUEUE.c.state, _STORED.c.header_message_id)
    .join(_STORED, _STORED.c.id == _QUEUE.c.message_id)
    .where(_STORED.c.header_message_id.in_(bindparam("ids", expanding=True)))
)
_WAITING = (QueueState.QUEUED, QueueState.LEASED)
_LOCKS: TextClause = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM"
    " (SELECT DISTINCT hashtextextended(key, 0) AS k FROM unnest(CAST(:keys AS text[])) AS key"
    "  ORDER BY k) AS keys"
)


@dataclass(frozen=True)
class Known:
    """A Message-ID on record: stored on a ticket (``in``) or sent from it (``out``)."""

    ticket_id: int
    message_id: str
    direction: str


@dataclass
class GroupLookups:
    """The answers for one group, kept up to date with what the group files, and
    the rows it files, written together (:mod:`ingest.work.grouprows`): ids in
    the answers may be provisional."""

    known: dict[tuple[str, str], list[Known]] = field(default_factory=dict)
    ticket_messages: dict[tuple[str, str, str], int] = field(default_factory=dict)
    unfiled: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    rows: GroupRows = field(default_factory=GroupRows)

    @classmethod
    def fetch(cls, session: Session, group: Sequence[tuple[Claim, ParsedMessage]]) -> GroupLookups:
        lookups = cls()
        own = {p.message_id for _, p in group}
        answered = {i for _, p in group for i in p.reply_ids}
        reported = {i for _, p in group for i in p.bounce.original_message_ids}
        if session.get_bind().dialect.name == "postgresql":
            keys = sorted({_lock_key(c.mailbox, p.message_id) for c, p in group})
            session.execute(_LOCKS, {"keys": keys})
        for entry_id, mailbox, state, header_id in _rows(session, _UNFILED, _bare(answered)):
            if state in _WAITING:
                lookups.unfiled.setdefault((mailbox, header_id), set()).add(entry_id)
        for mailbox, message_id, ticket_id, direction in _rows(
            session, _KNOWN_IDS, own | answered | reported
        ):
            lookups.known.setdefault((mailbox, message_id), []).append(
                Known(ticket_id, message_id, direction)
            )
        for mailbox, message_id, digest, ticket_message_id in _rows(session, _FILED, own):
            lookups.ticket_messages.setdefault((mailbox, message_id, digest), ticket_message_id)
        return lookups

    def duplicate(self, mailbox: str, message_id: str, digest: str) -> int | None:
        """The ticket message that already holds this very mail for this mailbox.

        A forwarder that lost our ``250`` sends the same mail again; that must
        not make a second ticket message. The same Message-ID with other
        content is a different message and is never dropped.
        """
        return self.ticket_messages.get((mailbox, message_id, digest))

    def known_message(
        self, mailbox: str, message_ids: Sequence[str], direction: str | None = None
    ) -> Known | None:
        """The record of the first of ``message_ids`` seen in ``mailbox``.

        An ID reused by a careless mailer can sit in several tickets; the oldest
        holder is the original the reply most likely answers.
        """
        for message_id in message_ids:
            matching = [
                k
                for k in self.known.get((mailbox, message_id), ())
                if direction is None or k.direction == direction
            ]
            if matching:
                return min(matching, key=lambda k: k.ticket_id)
        return None

    def earlier_unfiled(self, mailbox: str, entry_id: int, reply_ids: Sequence[str]) -> int | None:
        """An earlier queue entry of ``mailbox``, not yet filed, holding a message
        this one answers.

        Filing the answer first would open a second ticket. One worker files in
        arrival order anyway; this matters when several workers (or a retry)
        reorder a message and its reply, and the caller defers the reply.
        """
        waiting = (i for bare in _bare(reply_ids) for i in self.unfiled.get((mailbox, bare), ()))
        return min((i for i in waiting if i < entry_id), default=None)

    def filed(
        self, claim: Claim, parsed: ParsedMessage, ticket_id: int, ticket_message_id: int
    ) -> None:
        """``claim`` became ``ticket_message_id`` on ``ticket_id``, in this transaction."""
        mailbox, message_id = claim.mailbox, parsed.message_id
        self.ticket_messages.setdefault(
            (mailbox, message_id, parsed.content_digest), ticket_message_id
        )
        known = self.known.setdefault((mailbox, message_id), [])
        if not any(k.ticket_id == ticket_id and k.direction == "in" for k in known):
            known.append(Known(ticket_id, message_id, "in"))

    def done(self, entry_id: int) -> None:
        """The entry is done in this transaction, whether or not it made a ticket message."""
        for entries in self.unfiled.values():
            entries.discard(entry_id)

    def recorded(self, mailbox: str, message_id: str, ticket_id: int) -> bool:
        """Whether this Message-ID is on record for this ticket already (either way)."""
        return any(k.ticket_id == ticket_id for k in self.known.get((mailbox, message_id), ()))


def _lock_key(mailbox: str, message_id: str) -> str:
    return f"firstline.file\n{mailbox}\n{message_id}"


def _bare(message_ids: Iterable[str]) -> set[str]:
    """Message-IDs in the form intake stores them (without the angle brackets)."""
    return {i.strip("<>") for i in message_ids}


def _rows(session: Session, statement: Select[Any], values: set[str]) -> Iterator[Any]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield from session.execute(statement, {"ids": ordered[start : start + _CHUNK]})
