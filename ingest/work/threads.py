"""Which ticket a message belongs to.

The rules, in order, always within the mailbox the message arrived for
(tickets belong to one mailbox; the same customer writing to two mailboxes
has two tickets):

1. ``In-Reply-To``/``References`` naming a Message-ID of a message *in* a
   ticket: one we stored, or one we sent from it (``known_message_ids`` holds
   both directions). Only the messages' own IDs are recorded, never the IDs
   they refer to, so two customers answering the same newsletter do not meet
   in one ticket. The subject does not matter: a reply with a new subject
   still threads.
2. A ``[#1234]`` token in the subject, but only when the sender already takes
   part in ticket 1234 (its requester, or the sender or a To/Cc recipient of
   one of its messages). A stranger quoting a ticket number gets a ticket of
   their own instead of a seat in someone else's conversation.
3. Otherwise: a new ticket — unless a message it answers is still waiting in
   the queue (:meth:`~ingest.work.lookups.GroupLookups.earlier_unfiled`);
   then it waits for that one.

The Message-IDs on record are looked up once for the batch's whole group
(:mod:`ingest.work.lookups`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.work.lookups import GroupLookups
from storage.models import Ticket, TicketMessage

TICKET_TOKEN = re.compile(r"\[#(\d{1,18})\]")


@dataclass(frozen=True)
class ThreadMatch:
    """A ticket found for a message, and the evidence that chose it."""

    ticket_id: int
    rule: str
    evidence: str


def subject_token(ticket_id: int) -> str:
    """The token outbound subjects carry so that replies find their ticket."""
    return f"[#{ticket_id}]"


def is_participant(session: Session, ticket: Ticket, address: str) -> bool:
    """Whether ``address`` already takes part in ``ticket``'s conversation."""
    wanted = address.strip().lower()
    if not wanted:
        return False
    if ticket.requester.strip().lower() == wanted:
        return True
    rows = session.execute(
        select(col(TicketMessage.from_addr), col(TicketMessage.to), col(TicketMessage.cc)).where(
            col(TicketMessage.ticket_id) == ticket.id
        )
    ).all()
    for sender, to, cc in rows:
        if wanted in {a.strip().lower() for a in [sender, *(to or []), *(cc or [])]}:
            return True
    return False


def find_ticket(
    session: Session,
    lookups: GroupLookups,
    mailbox: str,
    reply_ids: Sequence[str],
    subject: str,
    sender: str | None,
) -> ThreadMatch | None:
    """The ticket a message joins, or None when it opens a new one."""
    known = lookups.known_message(mailbox, reply_ids)
    if known is not None:
        return ThreadMatch(known.ticket_id, "message-id", known.message_id)
    if not sender:
        return None
    tokens = dict.fromkeys(TICKET_TOKEN.findall(subject))
    if tokens:  # a participant may be one only in a message the group has not written
        lookups.rows.flush(session)
    for token in tokens:
        ticket = session.get(Ticket, int(token))
        if (
            ticket is not None
            and ticket.mailbox == mailbox
            and is_participant(session, ticket, sender)
        ):
            return ThreadMatch(int(token), "subject-token", subject_token(int(token)))
    return None
