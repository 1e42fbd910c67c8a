"""Mail in over SMTP, one batch, tickets out: the loop the ticket tests share."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.message.headers import summarize
from storage import views
from storage.models import QueueEntry, StoredMessage
from tests.support.server import RawClient, ServerThread


def deliver(
    server: ServerThread,
    raw: bytes,
    *,
    rcpt: str = "support@example.com",
    mail_from: str = "alice@customer.example",
) -> None:
    with server.smtp() as client:
        assert client.sendmail(mail_from, [rcpt], raw) == {}


def stored_message(
    raw: bytes, *, mail_from: str = "alice@customer.example", mailbox: str = "support@example.com"
) -> StoredMessage:
    """A received message as intake records it, for queueing without SMTP."""
    return StoredMessage(
        trace_id="test",
        digest=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        raw=raw,
        proto="ESMTP",
        client_ip="127.0.0.1",
        mail_from=mail_from,
        rcpt_tos=[mailbox],
        header_message_id=summarize(raw).message_id,
    )


def enqueue(
    session: Session,
    raw: bytes,
    *,
    mail_from: str = "alice@customer.example",
    mailbox: str = "support@example.com",
) -> int:
    """Queue a message the way intake does, skipping SMTP (for input SMTP would refuse)."""
    stored = stored_message(raw, mail_from=mail_from, mailbox=mailbox)
    session.add(stored)
    session.flush()
    assert stored.id is not None
    entry = QueueEntry(message_id=stored.id, mailbox=mailbox, digest=stored.digest)
    session.add(entry)
    session.flush()
    assert entry.id is not None
    return entry.id


def tickets(server: ServerThread) -> list[dict[str, Any]]:
    """Every ticket with its messages, oldest first, as ``tickets show --json`` has them."""
    with Session(server.engine) as session:
        rows = views.list_tickets(session, limit=10_000)
        details = [
            views.ticket_detail(session, row.id, attachment_base="") for row in reversed(rows)
        ]
    return [d.dump() for d in details if d is not None]


def queue_outcomes(server: ServerThread) -> list[tuple[QueueEntry, StoredMessage]]:
    with Session(server.engine) as session:
        rows = session.execute(
            select(QueueEntry, StoredMessage)
            .join(StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id))
            .order_by(col(QueueEntry.id))
        ).all()
        return [(entry, stored) for entry, stored in rows]


def ticket_of(all_tickets: list[dict[str, Any]], message_id: str) -> dict[str, Any]:
    """The one ticket holding a message with ``message_id``."""
    [ticket] = [t for t in all_tickets if any(m["message_id"] == message_id for m in t["messages"])]
    return ticket


def transmit(
    client: RawClient, raw: bytes, mail_from: str, rcpt: str = "support@example.com"
) -> str:
    """One transaction with the bytes exactly as given (dot-stuffed), the final reply."""
    assert client.cmd(f"MAIL FROM:<{mail_from}>".encode()).startswith(b"250")
    assert client.cmd(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")
    assert client.cmd(b"DATA").startswith(b"354")
    data = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    data = (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")
    client.send(data + b".\r\n")
    return client.reply().decode("utf-8", "replace")
