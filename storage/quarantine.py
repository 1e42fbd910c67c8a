"""Quarantined mail: look at it, release it, delete it — and remember who did.

Quarantine is a queue state (``quarantined``), set at intake by a verdict
(e.g. ``manual_forward: quarantine``) or in the batch (a scanner finding).
Releasing puts the entry back to ``queued`` so it goes through the batch like
any other mail; the entry remembers the release (``released_at``,
``released_reason``) so the batch does not quarantine it again for the
reason an operator has just overruled (see :func:`released_reason`). Every
action, including the batch's own quarantining and the retention purge,
writes a :class:`QuarantineAction` row that outlives the mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.errors import PermFail
from policy.message.ids import shown_message_id
from storage.documents import QuarantineActionOut, QuarantineDetailOut, QuarantineItemOut
from storage.models import (
    QuarantineAction,
    QueueEntry,
    QueueState,
    StoredMessage,
    iso,
    utcnow,
)


class NotQuarantined(PermFail):
    """The entry does not exist or is not in quarantine (any more)."""


@dataclass(frozen=True)
class Quarantined:
    entry: QueueEntry
    message: StoredMessage


def reason_of(entry: QueueEntry, message: StoredMessage) -> str | None:
    """Why it is held: the batch writes the entry's error, intake the verdict's reason."""
    return entry.last_error or message.verdict.get("reason")


def _view(entry: QueueEntry, message: StoredMessage) -> QuarantineItemOut:
    return QuarantineItemOut(
        id=entry.id,
        trace_id=message.trace_id,
        mailbox=entry.mailbox,
        reason=reason_of(entry, message),
        quarantined_at=iso(entry.state_changed_at),
        received_at=iso(message.received_at),
        mail_from=message.mail_from,
        header_from=message.header_from,
        subject=message.subject,
        message_id=shown_message_id(message.header_message_id),
        size=message.size,
        client_ip=message.client_ip,
        client_name=message.client_name,
    )


def _get(session: Session, entry_id: int) -> Quarantined:
    row = session.execute(
        select(QueueEntry, StoredMessage)
        .join(StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id))
        .where(col(QueueEntry.id) == entry_id, col(QueueEntry.state) == QueueState.QUARANTINED)
    ).first()
    if row is None:
        raise NotQuarantined(f"no quarantined message with id {entry_id}")
    return Quarantined(row[0], row[1])


def list_quarantined(session: Session, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Quarantined entries, newest first."""
    rows = session.execute(
        select(QueueEntry, StoredMessage)
        .join(StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id))
        .where(col(QueueEntry.state) == QueueState.QUARANTINED)
        .order_by(col(QueueEntry.state_changed_at).desc(), col(QueueEntry.id).desc())
        .limit(limit)
    ).all()
    return [_view(entry, message).dump() for entry, message in rows]


def show(session: Session, entry_id: int) -> dict[str, Any]:
    """One entry with its header block and its audit trail."""
    found = _get(session, entry_id)
    raw = found.message.raw or b""
    end = raw.find(b"\r\n\r\n")
    return QuarantineDetailOut(
        **dict(_view(found.entry, found.message)),
        headers=raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace"),
        authentication_results=found.message.authentication_results,
        verdict=found.message.verdict,
        history=history(session, entry_id),
    ).dump()


def raw_of(session: Session, entry_id: int) -> bytes | None:
    """The bytes as received, for a preview that parses them (never renders them)."""
    return _get(session, entry_id).message.raw


def history(session: Session, entry_id: int) -> list[dict[str, Any]]:
    actions = session.scalars(
        select(QuarantineAction)
        .where(col(QuarantineAction.queue_entry_id) == entry_id)
        .order_by(col(QuarantineAction.id))
    ).all()
    return [
        QuarantineActionOut(
            at=iso(a.at), action=a.action, by=a.by, reason=a.reason, note=a.note
        ).dump()
        for a in actions
    ]


def _audit(
    session: Session,
    action: str,
    by: str,
    entry: QueueEntry,
    message: StoredMessage,
    note: str | None = None,
) -> None:
    assert entry.id is not None
    session.add(
        QuarantineAction(
            action=action,
            by=by,
            queue_entry_id=entry.id,
            trace_id=message.trace_id,
            message_id=message.header_message_id,
            mailbox=entry.mailbox,
            reason=reason_of(entry, message),
            note=note,
        )
    )


def record_quarantined(session: Session, entry_id: int, *, by: str) -> None:
    """Audit a quarantine that just happened (batch or intake) in the caller's transaction."""
    row = session.execute(
        select(QueueEntry, StoredMessage)
        .join(StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id))
        .where(col(QueueEntry.id) == entry_id)
    ).first()
    if row is not None:
        _audit(session, "quarantined", by, row[0], row[1])


def release(session: Session, entry_id: int, *, by: str, note: str | None = None) -> dict[str, Any]:
    """Back to the queue, with the overruled reason recorded on the entry."""
    found = _get(session, entry_id)
    now = utcnow()
    _audit(session, "released", by, found.entry, found.message, note)
    session.execute(
        update(QueueEntry)
        .where(col(QueueEntry.id) == entry_id, col(QueueEntry.state) == QueueState.QUARANTINED)
        .values(
            state=QueueState.QUEUED,
            attempts=0,
            available_at=now,
            state_changed_at=now,
            released_at=now,
            released_reason=reason_of(found.entry, found.message),
            last_error=None,
        )
    )
    return _view(found.entry, found.message).dump()


def released_reason(session: Session, entry_id: int) -> str | None:
    """The quarantine reason an operator overruled for this entry, if any.

    The batch asks before quarantining: a scanner finding that an operator
    has already looked at and released must not send the mail back.
    """
    return session.scalar(
        select(col(QueueEntry.released_reason)).where(col(QueueEntry.id) == entry_id)
    )


def remove(
    session: Session,
    entry_id: int,
    *,
    by: str,
    action: str = "deleted",
    note: str | None = None,
) -> dict[str, Any]:
    """Delete the entry, and its stored message once no other entry needs it."""
    found = _get(session, entry_id)
    view = _view(found.entry, found.message).dump()
    _audit(session, action, by, found.entry, found.message, note)
    session.execute(delete(QueueEntry).where(col(QueueEntry.id) == entry_id))
    others = session.scalar(
        select(func.count())
        .select_from(QueueEntry)
        .where(col(QueueEntry.message_id) == found.message.id)
    )
    if not others:
        session.execute(delete(StoredMessage).where(col(StoredMessage.id) == found.message.id))
    return view
