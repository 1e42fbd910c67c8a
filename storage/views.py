"""Tickets and queue entries as the documents of :mod:`storage.documents`.

The CLI's ``--json`` output, the HTTP API and webhook events show the same
shapes, so the shapes are built once, here, as the API's own schemas; the
CLI and webhooks print their :meth:`~storage.documents.Document.dump`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.message.ids import shown_message_id
from storage.documents import (
    AttachmentOut,
    MessageOut,
    QueueEntryOut,
    TicketOut,
    TicketSummaryOut,
)
from storage.lease import table_of
from storage.models import Attachment, QueueEntry, StoredMessage, Ticket, TicketMessage, iso
from storage.outbox import replies_of


def ticket_summary(ticket: Ticket, message_count: int) -> TicketSummaryOut:
    return TicketSummaryOut(
        id=ticket.id,
        mailbox=ticket.mailbox,
        subject=ticket.subject,
        requester=ticket.requester,
        status=ticket.status,
        created_at=iso(ticket.created_at),
        updated_at=iso(ticket.updated_at),
        message_count=message_count,
    )


def list_tickets(session: Session, *, limit: int = 100) -> list[TicketSummaryOut]:
    counts = (
        select(col(TicketMessage.ticket_id), func.count().label("n"))
        .group_by(col(TicketMessage.ticket_id))
        .subquery()
    )
    rows = session.execute(
        select(Ticket, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.ticket_id == col(Ticket.id))
        .order_by(col(Ticket.id).desc())
        .limit(limit)
    ).all()
    return [ticket_summary(ticket, count) for ticket, count in rows]


def attachment_detail(attachment: Row[Any], *, attachment_base: str) -> AttachmentOut:
    """``attachment_base`` is the API's public address ("" for a path on this server)."""
    return AttachmentOut(
        id=attachment.id,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        sha256=attachment.sha256,
        inline=attachment.inline,
        content_id=attachment.content_id,
        download_url=f"{attachment_base}/api/v1/attachments/{attachment.id}",
    )


def message_detail(
    message: Row[Any], attachments: list[Row[Any]], *, attachment_base: str
) -> MessageOut:
    return MessageOut(
        id=message.id,
        message_id=shown_message_id(message.message_id),
        from_=message.from_addr,
        from_name=message.from_name,
        to=message.to,
        cc=message.cc,
        date=iso(message.date),
        subject=message.subject,
        text=message.text,
        html=message.html,
        attachments=[attachment_detail(a, attachment_base=attachment_base) for a in attachments],
        auto_reply=message.auto_reply,
        charset_repaired=message.charset_repaired,
        # Evidence behind the flags: thread rule, charset repairs, bounce status …
        details=message.details,
        forwarding=message.forwarding,
        authentication_results=message.authentication_results,
        stored_message_id=message.stored_message_id,
        created_at=iso(message.created_at),
    )


# Rows, not ORM objects: every message the batch files with a webhook channel
# builds this document, and the attachments' bytes are no part of it.
_MESSAGES = table_of(TicketMessage)
_ATTACHMENTS = table_of(Attachment)
_MESSAGES_OF = (
    select(_MESSAGES).where(_MESSAGES.c.ticket_id == bindparam("ticket")).order_by(_MESSAGES.c.id)
)
_ATTACHMENTS_OF = (
    select(*(c for c in _ATTACHMENTS.c if c.name != "data"))
    .join(_MESSAGES, _MESSAGES.c.id == _ATTACHMENTS.c.ticket_message_id)
    .where(_MESSAGES.c.ticket_id == bindparam("ticket"))
    .order_by(_ATTACHMENTS.c.id)
)


def ticket_detail(session: Session, ticket_id: int, *, attachment_base: str) -> TicketOut | None:
    """A ticket as helpdesks see it: messages with download links, and replies."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    messages = session.execute(_MESSAGES_OF, {"ticket": ticket_id}).all()
    attachments: dict[int, list[Row[Any]]] = {}
    for attachment in session.execute(_ATTACHMENTS_OF, {"ticket": ticket_id}):
        attachments.setdefault(attachment.ticket_message_id, []).append(attachment)
    return TicketOut(
        **dict(ticket_summary(ticket, len(messages))),
        messages=[
            message_detail(m, attachments.get(m.id, []), attachment_base=attachment_base)
            for m in messages
        ],
        replies=replies_of(session, ticket_id),
    )


def queue_entry(entry: QueueEntry, message: StoredMessage) -> QueueEntryOut:
    """One queue entry, with the keys a quarantine item and a trace use (docs/json.md)."""
    return QueueEntryOut(
        id=entry.id,
        trace_id=message.trace_id,
        state=entry.state.value if hasattr(entry.state, "value") else entry.state,
        mailbox=entry.mailbox,
        received_at=iso(message.received_at),
        size=message.size,
        mail_from=message.mail_from,
        message_id=shown_message_id(message.header_message_id),
        subject=message.subject,
        attempts=entry.attempts,
        lease_owner=entry.lease_owner,
        lease_expires_at=iso(entry.lease_expires_at),
        last_error=entry.last_error,
        state_changed_at=iso(entry.state_changed_at),
        ticket_message_id=entry.ticket_message_id,
    )


def list_queue(session: Session, states: list[str], *, limit: int = 1000) -> list[dict[str, Any]]:
    """The entries in ``states``, oldest first, as ``queue list --json`` prints them."""
    rows = session.execute(
        select(QueueEntry, StoredMessage)
        .join(StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id))
        .where(col(QueueEntry.state).in_(states))
        .order_by(col(QueueEntry.id))
        .limit(limit)
    ).all()
    return [queue_entry(entry, message).dump() for entry, message in rows]
