"""The tables: what we must never lose, and what we made of it.

Raw bytes live in ``stored_messages`` and are never rewritten: everything
else (queue state, tickets, parsed text) can be rebuilt from them after a
parser fix. The queue is a state column with explicit transitions (see
``storage/mailqueue.py``); tickets and their messages are the product's output;
replies and webhook events are the work going back out (``storage/outbox.py``,
``storage/events.py``). All times are UTC.

Every table is here, in one module, so the migrations and the test comparing
them with the models (``tests/test_migrations.py``) see all of them by
importing this one; the modules named for a table keep its transitions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _when(**kwargs: Any) -> Any:
    """A timezone-aware timestamp column (SQLite hands back naive UTC; see ``aware``)."""
    return Field(sa_type=DateTime(timezone=True), **kwargs)


def aware(value: datetime) -> datetime:
    """SQLite drops the zone; every stored time is UTC, so put it back."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 with its zone, for JSON output."""
    return aware(value).isoformat() if value else None


class QueueState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class TicketStatus(StrEnum):
    """Where a ticket stands; agents set it, a customer writing again reopens it."""

    OPEN = "open"
    PENDING = "pending"
    CLOSED = "closed"


class ReplyState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    HELD = "held"


class EventState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"


class LeaseColumns(SQLModel):
    """What a row needs to be claimed through :mod:`storage.lease`, beside its ``id``
    and its own ``state``: written once here, so the queue, the outbox and the
    webhook events cannot drift apart in how a lease is kept."""

    attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _when(default=None, nullable=True)
    state_changed_at: datetime = _when(default_factory=utcnow)


class StoredMessage(SQLModel, table=True):
    """Exactly what was received (plus our trace headers), and the envelope."""

    __tablename__ = "stored_messages"

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = _when(default_factory=utcnow, index=True)
    # The id in our Received header and in "250 … queued as ID", like Postfix's queue id.
    trace_id: str = Field(max_length=16, index=True)
    # sha256 of the bytes as the client sent them, before our headers: the
    # same mail retried after a lost 250 has the same digest. Not indexed: no
    # query looks a message up by it, and a random key's index made every
    # insert into a large store read and write a leaf page of its own.
    digest: str = Field(max_length=64)
    size: int
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    purged_at: datetime | None = _when(default=None, nullable=True)
    proto: str = Field(max_length=8)
    client_ip: str = Field(max_length=64)
    client_name: str | None = Field(default=None, max_length=255)
    helo: str = Field(default="", max_length=255)
    mail_from: str = Field(default="", max_length=512)
    rcpt_tos: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    header_message_id: str | None = Field(default=None, max_length=998, index=True)
    header_from: str | None = Field(default=None, max_length=998)
    subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    forwarding: str = Field(default="direct", max_length=16)
    authentication_results: str | None = Field(default=None, sa_column=Column(Text))
    verdict: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class QueueEntry(LeaseColumns, table=True):
    """One unit of batch work: one message for one mailbox."""

    __tablename__ = "queue"
    __table_args__ = (Index("ix_queue_state_available", "state", "available_at"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="stored_messages.id", index=True)
    mailbox: str = Field(max_length=320, index=True)
    digest: str = Field(max_length=64)
    state: QueueState = Field(default=QueueState.QUEUED, max_length=16)
    available_at: datetime = _when(default_factory=utcnow)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _when(default_factory=utcnow)
    ticket_message_id: int | None = Field(default=None)
    # Why a processed entry made no new ticket message (a duplicate, a bounce of
    # mail we never sent, our own mail come back): what trace says about it.
    outcome: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Set when an operator released the entry from quarantine: the batch must
    # not quarantine it again for the reason the operator has already overruled.
    released_at: datetime | None = _when(default=None, nullable=True)
    released_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=320, index=True)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    requester: str = Field(max_length=512)
    # Stored as its value in a plain string column, as it always was.
    status: TicketStatus = Field(
        default=TicketStatus.OPEN, sa_type=AutoString(length=16), index=True
    )
    created_at: datetime = _when(default_factory=utcnow)
    updated_at: datetime = _when(default_factory=utcnow, index=True)


class TicketMessage(SQLModel, table=True):
    __tablename__ = "ticket_messages"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    stored_message_id: int = Field(foreign_key="stored_messages.id", index=True)
    # The fence for exactly-once: one queue entry makes at most one ticket message.
    queue_entry_id: int = Field(foreign_key="queue.id", unique=True)
    message_id: str = Field(max_length=998, index=True)
    digest: str = Field(max_length=64)
    from_addr: str = Field(default="", max_length=998)
    from_name: str = Field(default="", max_length=998)
    to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cc: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    date: datetime | None = _when(default=None, nullable=True)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    auto_reply: bool = False
    charset_repaired: bool = False
    forwarding: str = Field(default="direct", max_length=16)
    authentication_results: str | None = Field(default=None, sa_column=Column(Text))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _when(default_factory=utcnow)


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"

    id: int | None = Field(default=None, primary_key=True)
    ticket_message_id: int = Field(foreign_key="ticket_messages.id", index=True)
    filename: str = Field(default="", max_length=1024)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = 0
    sha256: str = Field(max_length=64)
    inline: bool = False
    content_id: str | None = Field(default=None, max_length=998)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class KnownMessageId(SQLModel, table=True):
    """Every Message-ID we stored on a ticket or sent from one, for threading."""

    __tablename__ = "known_message_ids"
    __table_args__ = (
        UniqueConstraint("mailbox", "message_id", "ticket_id", name="uq_known_message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=320)
    message_id: str = Field(max_length=998, index=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    direction: str = Field(default="in", max_length=3)
    created_at: datetime = _when(default_factory=utcnow)


class Rejection(SQLModel, table=True):
    """One refusal, with enough evidence to answer "where is my mail?" later."""

    __tablename__ = "rejections"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _when(default_factory=utcnow, index=True)
    stage: str = Field(max_length=16)
    reason: str = Field(max_length=64, index=True)
    reply: str = Field(sa_column=Column(Text, nullable=False))
    client_ip: str = Field(default="", max_length=64)
    client_name: str | None = Field(default=None, max_length=255)
    helo: str = Field(default="", max_length=255)
    proto: str = Field(default="ESMTP", max_length=8)
    mail_from: str = Field(default="", max_length=512, index=True)
    rcpt_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mailbox: str | None = Field(default=None, max_length=320, index=True)
    header_from: str | None = Field(default=None, max_length=998)
    subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    message_id: str | None = Field(default=None, max_length=998, index=True)
    authentication: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    headers: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Refusals in the batch (virus, unparseable) refer to the message we stored.
    trace_id: str | None = Field(default=None, max_length=16, index=True)


class QuarantineAction(SQLModel, table=True):
    """Who did what to quarantined mail, and when; kept after the mail is gone.

    Plain copies instead of foreign keys: a deleted entry's audit trail stays.
    """

    __tablename__ = "quarantine_actions"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(default_factory=utcnow, index=True)
    action: str = Field(max_length=16)  # quarantined | released | deleted | purged
    by: str = Field(max_length=128)
    queue_entry_id: int = Field(index=True)
    trace_id: str = Field(default="", max_length=16)
    message_id: str | None = Field(default=None, max_length=998)
    mailbox: str = Field(default="", max_length=320)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The operator's own words for a release or delete ("customer confirmed it").
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class BatchRun(SQLModel, table=True):
    """The last batch of each worker, for ``firstline status`` and the metrics."""

    __tablename__ = "batch_runs"

    owner: str = Field(primary_key=True, max_length=128)
    started_at: datetime = _when(default_factory=utcnow)
    finished_at: datetime = _when(default_factory=utcnow, index=True)
    duration: float = 0.0
    taken: int = 0
    tickets: int = 0
    failed: int = 0
    deferred: int = 0
    quarantined: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Reply(LeaseColumns, table=True):
    """One answer to a ticket, composed once; the bytes are what every attempt sends."""

    __tablename__ = "replies"
    __table_args__ = (Index("ix_replies_state_available", "state", "available_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    mailbox: str = Field(max_length=320)
    message_id: str = Field(max_length=998, index=True)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: ReplyState = Field(default=ReplyState.QUEUED, max_length=16)
    available_at: datetime = _when(default_factory=utcnow)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The classified failure (step, class, server text, hint) the send test shows too.
    error_class: str | None = Field(default=None, max_length=32)
    diagnosis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    server_reply: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    queue_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _when(default_factory=utcnow)
    sent_at: datetime | None = _when(default=None, nullable=True)
    # Digest of the mailbox's credentials a held reply failed with (SmtpConfig.credentials).
    held_credentials: str | None = Field(default=None, max_length=64)


class WebhookEvent(LeaseColumns, table=True):
    """One thing a helpdesk must hear about, kept until it has (``storage/events.py``)."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_due", "state", "next_attempt_at"),
        Index("ix_webhook_events_order", "channel", "ordering_key", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The idempotency key receivers dedupe on: the same in every attempt and replay.
    event_id: str = Field(max_length=64, unique=True)
    type: str = Field(max_length=32, index=True)
    channel: str = Field(max_length=255, index=True)
    mailbox: str | None = Field(default=None, max_length=320)
    ticket_id: int | None = Field(default=None, index=True)
    # Events with the same key are delivered in id order ("ticket:12"); an
    # event about no ticket is its own key.
    ordering_key: str = Field(max_length=80)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: EventState = Field(default=EventState.QUEUED, max_length=16)
    next_attempt_at: datetime = _when(default_factory=utcnow)
    # Retries stop ``retry_window`` seconds after this: the first attempt's time.
    window_start: datetime = _when(default_factory=utcnow)
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _when(default_factory=utcnow)
    delivered_at: datetime | None = _when(default=None, nullable=True)


class OAuthToken(SQLModel, table=True):
    """A relay's OAuth 2.0 tokens (``storage/oauth_tokens.py``).

    Its refresh is fenced by a lease token too, but no state, owner or
    attempts: one process asks the provider while the others wait.
    """

    __tablename__ = "oauth_tokens"

    mailbox: str = Field(primary_key=True, max_length=320)
    credentials: str = Field(default="", max_length=64)
    access_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: datetime | None = _when(default=None, nullable=True)
    refresh_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _when(default=None, nullable=True)
    updated_at: datetime = _when(default_factory=utcnow)


class InstanceKey(SQLModel, table=True):
    """A secret of this installation (``storage/keys.py``)."""

    __tablename__ = "instance_keys"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=128)  # hex
    created_at: datetime = _when(default_factory=utcnow)


# SQLModel's one registry, holding every table above once this module is imported.
metadata = SQLModel.metadata
