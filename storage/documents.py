"""The documents helpdesks and operators read: one class per shape.

A ticket, a message, an attachment, a reply, a rejection, a queue entry, a
quarantine item and a trace are each one pydantic class, built once
(:mod:`storage.views`, :mod:`storage.outbox`, :mod:`storage.rejections`,
:mod:`storage.quarantine`, :mod:`storage.mailtrace`). The HTTP API answers with
them (they are its OpenAPI schemas, so the class names are public there),
and the CLI's ``--json`` and webhook payloads are their :meth:`Document.dump`:
the three cannot drift apart. Their keys are listed in docs/json.md and are a
public contract: add, never rename.

A key that exists only in some state (a reply's ``sent_at`` once it is sent)
is left unset otherwise: :meth:`Document.dump` leaves it out, as docs/json.md
says; the API's serialiser writes it as ``null``. The classes carry no
docstrings: the OpenAPI document would publish them as descriptions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage import models

# storage's enums as Literals: the schema lists the values in place, as it always did,
# and tests/test_documents.py holds them to the enums.
TicketStatus = Literal[
    models.TicketStatus.OPEN, models.TicketStatus.PENDING, models.TicketStatus.CLOSED
]
ReplyState = Literal[
    models.ReplyState.QUEUED, models.ReplyState.SENDING, models.ReplyState.SENT,
    models.ReplyState.RETRYING, models.ReplyState.FAILED, models.ReplyState.HELD,
]  # fmt: skip


class Document(BaseModel):
    """A shape of docs/json.md."""

    def dump(self) -> dict[str, Any]:
        """The JSON form the CLI prints and webhooks carry: keys as documented, set ones only."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class AttachmentOut(Document):
    id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None = Field(description="what cid: image sources in the html name")
    download_url: str


class MessageOut(Document):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    message_id: str
    from_: str = Field(alias="from")
    from_name: str
    to: list[str]
    cc: list[str]
    date: str | None
    subject: str
    text: str
    html: str | None = Field(description="sanitised")
    attachments: list[AttachmentOut]
    auto_reply: bool
    charset_repaired: bool
    details: dict[str, Any]
    forwarding: str
    authentication_results: str | None
    stored_message_id: int
    created_at: str | None


class ReplyOut(Document):
    id: int
    ticket_id: int
    message_id: str
    recipients: list[str]
    state: ReplyState
    attempts: int
    created_at: str | None
    state_changed_at: str | None
    server_reply: str | None = None
    relay_queue_id: str | None = Field(
        default=None, description="the relay's queue id from its 250 (ours is trace_id)"
    )
    sent_at: str | None = None
    last_error: str | None = None
    error_class: str | None = None
    diagnosis: dict[str, Any] | None = None
    next_attempt_at: str | None = None


class TicketSummaryOut(Document):
    id: int
    mailbox: str
    subject: str
    requester: str
    status: TicketStatus
    created_at: str | None
    updated_at: str | None
    message_count: int = Field(description="how many messages the ticket has")


class TicketOut(TicketSummaryOut):
    messages: list[MessageOut]
    replies: list[ReplyOut]


# The keys the API has always declared; the rest of the record (client_ip,
# helo, headers …) rides along as extra keys, listed in docs/json.md and
# checked there: declaring them would change the OpenAPI document.
class RejectionOut(Document):
    model_config = ConfigDict(extra="allow")

    id: int
    created_at: str
    stage: str
    reason: str
    reply: str
    mailbox: str | None
    mail_from: str
    rcpt_to: list[str]
    message_id: str | None = Field(description="<left@right>, as in every output")
    trace_id: str | None = Field(description="our queue ID, when the message was received")
    verdict: dict[str, Any] = Field(description="what verification recorded (docs/json.md)")


class TraceOut(Document):
    query: str = Field(description="the Message-ID or queue ID asked about, as given")
    message_id: str | None = Field(description="<left@right>; null for a queue ID without one")
    trace_ids: list[str] = Field(description="our queue IDs of the message")
    found: bool
    status: list[dict[str, Any]]
    events: list[dict[str, Any]]


class QueueEntryOut(Document):
    id: int
    trace_id: str
    state: str
    mailbox: str
    received_at: str | None
    size: int
    mail_from: str
    message_id: str | None
    subject: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: str | None
    last_error: str | None
    state_changed_at: str | None
    ticket_message_id: int | None


class QuarantineActionOut(Document):
    at: str | None
    action: str
    by: str
    reason: str | None
    note: str | None


class QuarantineItemOut(Document):
    id: int
    trace_id: str
    mailbox: str
    reason: str | None
    quarantined_at: str | None
    received_at: str | None
    mail_from: str
    header_from: str | None
    subject: str | None
    message_id: str | None
    size: int
    client_ip: str | None
    client_name: str | None


class QuarantineDetailOut(QuarantineItemOut):
    headers: str
    authentication_results: str | None
    verdict: dict[str, Any]
    history: list[QuarantineActionOut]
