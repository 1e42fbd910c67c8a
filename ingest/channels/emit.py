"""Deciding which webhook events a change makes, inside the change's transaction.

Every function here takes the caller's session and adds event rows to it
(:mod:`storage.events`), so an event commits with the ticket message, reply
outcome, quarantine or refusal it reports — or rolls back with it. Delivery
is someone else's job (:mod:`ingest.channels.webhooks`), later, and never in the way.

Only ``webhook`` channels get events, and only the types listed in their
``events`` setting (``message.rejected`` is opt-in). The payload is a
snapshot taken now: the ticket with its messages, replies and attachment
download links, as the API's ``GET /api/v1/tickets/{id}`` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.config.model import ChannelConfig, Config, EventType
from storage import events, views
from storage.documents import TicketOut
from storage.intake import Incoming, Item, WriteHook
from storage.models import QueueState, Rejection, Reply, ReplyState, Ticket
from storage.outbox import reply_view
from storage.quarantine import show as quarantine_view
from storage.rejections import rejection_view

log = logging.getLogger("mail.events")


def channels_for(config: Config, mailbox: str | None, type: EventType) -> list[ChannelConfig]:
    """The webhook channel of ``mailbox``, if it wants events of this type."""
    box = config.mailbox(mailbox) if mailbox else None
    if box is None:
        return []
    return [
        c
        for c in config.channels
        if c.name == box.channel and c.type == "webhook" and type in c.events
    ]


def attachment_base(config: Config) -> str:
    """Where download links point: the configured public address, else a path."""
    return (config.api.base_url or "").rstrip("/")


def ticket_document(session: Session, config: Config, ticket_id: int) -> TicketOut | None:
    """A ticket as helpdesks see it, through the API, in events and on the CLI."""
    return views.ticket_detail(session, ticket_id, attachment_base=attachment_base(config))


def emit(
    session: Session,
    config: Config,
    type: EventType,
    *,
    mailbox: str | None,
    ticket_id: int | None,
    data: dict[str, Any],
) -> None:
    """Queue ``type`` for every channel that wants it."""
    for channel in channels_for(config, mailbox, type):
        event_id = events.add(
            session,
            type=type,
            channel=channel.name,
            mailbox=mailbox,
            ticket_id=ticket_id,
            data=data,
        )
        log.debug("event %s %s queued for %s", event_id, type, channel.name)


def _ticket_event(
    session: Session, config: Config, type: EventType, ticket_id: int, **extra: Any
) -> None:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or not channels_for(config, ticket.mailbox, type):
        return
    document = ticket_document(session, config, ticket_id)
    assert document is not None
    emit(
        session,
        config,
        type,
        mailbox=ticket.mailbox,
        ticket_id=ticket_id,
        data={"ticket": document.dump(), **extra},
    )


def _filed_type(created: bool) -> EventType:
    return "ticket.created" if created else "ticket.message_added"


def wants_filed(config: Config, mailbox: str, *, created: bool) -> bool:
    """Whether a message filed for ``mailbox`` makes an event: asked first, since
    most mailboxes' batches ask no more, and the event's snapshot needs the
    group's rows written (:mod:`ingest.work.grouprows`)."""
    return bool(channels_for(config, mailbox, _filed_type(created)))


def message_filed(
    session: Session,
    config: Config,
    mailbox: str,
    ticket_id: int,
    ticket_message_id: int,
    *,
    created: bool,
) -> None:
    """A queue entry has just become a new ticket message (and ``created`` its ticket)."""
    _ticket_event(
        session, config, _filed_type(created), ticket_id, ticket_message_id=ticket_message_id
    )


def reply_bounced(session: Session, config: Config, reply_message_id: str) -> None:
    """A bounce has just turned a sent reply into a failed one."""
    reply_id = session.scalar(
        select(col(Reply.id)).where(col(Reply.message_id) == reply_message_id)
    )
    if reply_id is not None:
        reply_settled(session, config, reply_id)


def reply_settled(session: Session, config: Config, reply_id: int) -> None:
    """A reply reached ``sent`` or ``failed`` (attempts exhausted, permanent, bounced)."""
    reply = session.get(Reply, reply_id)
    if reply is None or reply.state not in (ReplyState.SENT, ReplyState.FAILED):
        return
    type: EventType = "reply.sent" if reply.state == ReplyState.SENT else "reply.failed"
    _ticket_event(session, config, type, reply.ticket_id, reply=reply_view(reply).dump())


def quarantined(session: Session, config: Config, entry_id: int) -> None:
    """A queue entry was quarantined (at intake or in the batch)."""
    view = quarantine_view(session, entry_id)
    emit(
        session,
        config,
        "message.quarantined",
        mailbox=view["mailbox"],
        ticket_id=None,
        data={"message": view},
    )


def rejected(session: Session, config: Config, rejection: Rejection) -> None:
    """A refusal for one of a channel's mailboxes (opt-in per channel)."""
    if not channels_for(config, rejection.mailbox, "message.rejected"):
        return
    session.flush()  # the record's id is part of the event
    emit(
        session,
        config,
        "message.rejected",
        mailbox=rejection.mailbox,
        ticket_id=None,
        data={"rejection": rejection_view(rejection).dump()},
    )


def on_intake(current: Callable[[], Config]) -> WriteHook:
    """The group-commit writer's hook: events for what intake quarantined or refused.

    ``current`` returns the configuration in force (it may be reloaded).
    """

    def hook(session: Session, item: Item) -> None:
        config = current()
        if isinstance(item, Rejection):
            rejected(session, config, item)
        elif isinstance(item, Incoming) and item.state == QueueState.QUARANTINED:
            for entry_id in item.queue_ids:
                quarantined(session, config, entry_id)

    return hook
