"""File one queued message onto a ticket.

Runs inside the batch's transaction (see ``ingest/batch.py``): whatever it
writes commits together with the queue entry's ``done``, or not at all.
"""

from __future__ import annotations

from email.utils import getaddresses, parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.headers import summarize
from policy.config import Config
from storage.models import KnownMessageId, StoredMessage, Ticket, TicketMessage, utcnow
from storage.queue import Claim


def file_message(session: Session, claim: Claim, stored: StoredMessage, config: Config) -> int:
    """Open a ticket for the message and return the new ticket message's id."""
    assert stored.raw is not None and stored.id is not None
    summary = summarize(stored.raw)
    name, address = parseaddr(summary.header_from or "")
    requester = address or stored.mail_from or "unknown"
    message_id = summary.message_id or f"{claim.digest[:32]}@firstline.invalid"
    duplicate = find_duplicate(session, claim.mailbox, message_id, claim.digest)
    if duplicate is not None:
        return duplicate
    now = utcnow()
    ticket = Ticket(
        mailbox=claim.mailbox,
        subject=summary.subject or "",
        requester=requester,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    message = TicketMessage(
        ticket_id=ticket.id,
        stored_message_id=stored.id,
        queue_entry_id=claim.entry_id,
        message_id=message_id,
        digest=claim.digest,
        from_addr=requester,
        from_name=name,
        to=[a for _, a in getaddresses(stored.rcpt_tos)],
        subject=summary.subject or "",
        forwarding=stored.forwarding,
        authentication_results=stored.authentication_results,
    )
    session.add(message)
    session.add(KnownMessageId(mailbox=claim.mailbox, message_id=message_id, ticket_id=ticket.id))
    session.flush()
    assert message.id is not None
    return message.id


def find_duplicate(session: Session, mailbox: str, message_id: str, digest: str) -> int | None:
    """The ticket message that already holds these exact bytes for this mailbox.

    A forwarder that lost our ``250`` sends the same bytes again; that must not
    make a second ticket message. The same Message-ID with other content is a
    different message and is never dropped.
    """
    return session.execute(
        select(col(TicketMessage.id))
        .join(Ticket, col(Ticket.id) == col(TicketMessage.ticket_id))
        .where(
            col(Ticket.mailbox) == mailbox,
            col(TicketMessage.message_id) == message_id,
            col(TicketMessage.digest) == digest,
        )
        .limit(1)
    ).scalar_one_or_none()
