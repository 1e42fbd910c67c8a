""" "Where is my mail?": everything we know about one Message-ID, in time order.

A message may have been refused (at RCPT, DATA or in the batch), accepted
and queued once per mailbox, quarantined and released, failed, filed on a
ticket, or delivered twice. Each of those leaves a row somewhere; this
gathers them into one list of events, oldest first, with a one-line status
per mailbox at the end. The argument may also be the trace id from our
``250 … queued as ID`` reply or ``Received`` header.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.message.ids import shown_message_id
from policy.verify.verdict import original_sender
from storage.documents import TraceOut
from storage.models import (
    QuarantineAction,
    QueueEntry,
    QueueState,
    Rejection,
    StoredMessage,
    TicketMessage,
    iso,
)
from storage.quarantine import reason_of
from storage.rejections import bare_message_id


def _status(entry: QueueEntry, message: StoredMessage, ticket_id: int | None) -> str:
    state = QueueState(entry.state)
    if state == QueueState.DONE:
        why = f": {entry.outcome}" if entry.outcome else ""
        return (
            f"on ticket {ticket_id}{why}" if ticket_id is not None else f"processed, no ticket{why}"
        )
    if state == QueueState.FAILED:
        return f"failed after {entry.attempts} attempt(s): {entry.last_error or 'no error'}"
    if state == QueueState.QUARANTINED:
        return f"quarantined: {reason_of(entry, message) or 'no reason recorded'}"
    if state == QueueState.LEASED:
        return f"being processed (attempt {entry.attempts})"
    waiting = f"; last error: {entry.last_error}" if entry.last_error else ""
    return f"queued{waiting}"


def trace(session: Session, message_id_or_queue_id: str) -> dict[str, Any]:
    """Events and per-mailbox status for a Message-ID (brackets optional) or a queue ID.

    ``message_id`` is the Message-ID found (``<…>``; None when the queue ID
    names a message without one), ``trace_ids`` our queue IDs of it.
    """
    bare = bare_message_id(message_id_or_queue_id)
    events: list[dict[str, Any]] = []
    status: list[dict[str, Any]] = []

    rejections = session.scalars(
        select(Rejection).where(
            or_(col(Rejection.message_id) == bare, col(Rejection.trace_id) == bare.upper())
        )
    ).all()
    for r in rejections:
        events.append(
            {
                "at": iso(r.created_at),
                "event": "rejected",
                "stage": r.stage,
                "reason": r.reason,
                "reply": r.reply,
                "rejection_id": r.id,
                "client_ip": r.client_ip,
                "client_name": r.client_name,
                "mail_from": r.mail_from,
                "rcpt_to": r.rcpt_to,
                "trace_id": r.trace_id,
                "forwarded_from": original_sender(r.authentication),
            }
        )
        if r.stage != "BATCH":  # a batch refusal is also visible on its queue entry
            status.append(
                {
                    "mailbox": r.mailbox or ", ".join(r.rcpt_to),
                    "state": "rejected",
                    "status": f"rejected at {r.stage}: {r.reason}",
                }
            )

    stored = session.scalars(
        select(StoredMessage)
        .where(
            or_(
                col(StoredMessage.header_message_id) == bare,
                col(StoredMessage.trace_id) == bare.upper(),
            )
        )
        .order_by(col(StoredMessage.id))
    ).all()
    stored_ids = [s.id for s in stored]
    entries = session.scalars(
        select(QueueEntry)
        .where(col(QueueEntry.message_id).in_(stored_ids))
        .order_by(col(QueueEntry.id))
    ).all()
    ticket_of = _tickets_of(session, [e.ticket_message_id for e in entries])
    message_of = {m.id: m for m in stored}
    for message in stored:
        events.append(
            {
                "at": iso(message.received_at),
                "event": "received",
                "trace_id": message.trace_id,
                "client_ip": message.client_ip,
                "client_name": message.client_name,
                "mail_from": message.mail_from,
                "rcpt_to": message.rcpt_tos,
                "size": message.size,
                "subject": message.subject,
                "forwarded_from": original_sender(message.verdict),
                "verdict": message.verdict,
            }
        )
        if message.purged_at is not None:
            events.append(
                {
                    "at": iso(message.purged_at),
                    "event": "raw message purged",
                    "trace_id": message.trace_id,
                }
            )
    for entry in entries:
        ticket_id = ticket_of.get(entry.ticket_message_id or -1)
        events.append(
            {
                "at": iso(entry.state_changed_at),
                "event": QueueState(entry.state).value,
                "queue_entry_id": entry.id,
                "mailbox": entry.mailbox,
                "attempts": entry.attempts,
                "last_error": entry.last_error,
                "outcome": entry.outcome,
                "ticket_id": ticket_id,
            }
        )
        summary = _status(entry, message_of[entry.message_id], ticket_id)
        status.append(
            {
                "mailbox": entry.mailbox,
                "state": QueueState(entry.state).value,
                "queue_entry_id": entry.id,
                "ticket_id": ticket_id,
                "status": summary,
            }
        )

    entry_ids = [e.id for e in entries]
    actions = session.scalars(
        select(QuarantineAction).where(
            or_(
                col(QuarantineAction.queue_entry_id).in_(entry_ids),
                col(QuarantineAction.message_id) == bare,
            )
        )
    ).all()
    for action in actions:
        events.append(
            {
                "at": iso(action.at),
                "event": f"quarantine {action.action}",
                "by": action.by,
                "queue_entry_id": action.queue_entry_id,
                "mailbox": action.mailbox,
                "reason": action.reason,
                "note": action.note,
            }
        )

    # Ticket messages reached without a queue entry of ours (e.g. a duplicate
    # delivery that resolved to an earlier copy with the same Message-ID).
    known = {e.ticket_message_id for e in entries}
    extra = session.scalars(
        select(TicketMessage).where(col(TicketMessage.message_id).in_([bare, f"<{bare}>"]))
    ).all()
    for tm in extra:
        if tm.id in known:
            continue
        events.append(
            {
                "at": iso(tm.created_at),
                "event": "filed",
                "ticket_id": tm.ticket_id,
                "ticket_message_id": tm.id,
            }
        )

    events.sort(key=lambda e: e["at"] or "")  # stable: ties keep the order of the story
    trace_ids = sorted(
        {s.trace_id for s in stored} | {r.trace_id for r in rejections if r.trace_id}
    )
    by_queue_id = "@" not in bare and bare.upper() in trace_ids
    if by_queue_id:  # the argument was our queue ID: name the message it belongs to
        found_ids = [s.header_message_id for s in stored] + [r.message_id for r in rejections]
        message_id = shown_message_id(next((m for m in found_ids if m), None))
    else:
        message_id = shown_message_id(bare)
    return TraceOut(
        query=message_id_or_queue_id.strip(),
        message_id=message_id,
        trace_ids=trace_ids,
        found=bool(events),
        status=status,
        events=events,
    ).dump()


def _tickets_of(session: Session, ticket_message_ids: list[int | None]) -> dict[int, int]:
    ids = [i for i in ticket_message_ids if i is not None]
    if not ids:
        return {}
    rows = session.execute(
        select(col(TicketMessage.id), col(TicketMessage.ticket_id)).where(
            col(TicketMessage.id).in_(ids)
        )
    ).all()
    return {row[0]: row[1] for row in rows if row[0] is not None}
