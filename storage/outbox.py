"""The outbox: replies waiting to go out through their mailbox's SMTP server.

Every reply has one explicit, timestamped delivery state::

    queued ──claim──▶ sending(owner, token, expires_at) ──▶ sent(server reply, queue id)
                        │  ▲                          └───▶ failed(error, class)
            temporary   ▼  │ due again                          ▲
                      retrying(last error, next attempt) ───────┘ attempts exhausted
    sent ──bounce comes back──▶ failed(bounce reason)
    sending ──login refused──▶ held(error, credentials) ──credentials changed / retry──▶ queued

A refused login (the password, the OAuth client, consent, SMTP AUTH turned
off) will be refused again every minute until an admin acts, so such a reply
is ``held`` with the digest of the credentials that failed: the worker puts
it back in the queue once the mailbox's credentials differ (a reload with a
new secret, a ``firstline oauth login``) or an operator retries it.

Replies are claimed exactly as the inbound queue is (:mod:`storage.lease`):
one owner and token per claim, token-checked transitions, so two workers
never send the same reply twice. A worker that dies mid-send leaves the
reply ``sending``; once its lease expires the reply is taken again — the
same Message-ID goes out, so a duplicate threads onto itself in the
customer's client rather than a reply being lost — until that has happened
``max_attempts`` times: then it is ``failed`` as abandoned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, true, update
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.message.ids import shown_message_id
from storage import lease
from storage.documents import ReplyOut
from storage.models import Reply, ReplyState, iso, utcnow

# The table and its states are defined with every other one in storage.models.
__all__ = [
    "ReplyClaim",
    "claim",
    "depth",
    "failed_replies",
    "mark_attempt_failed",
    "mark_reply_bounced",
    "mark_sent",
    "release_held",
    "replies_of",
    "retry_failed",
    "retry_held",
]


@dataclass(frozen=True)
class ReplyClaim:
    """A reply leased for sending; ``token`` must accompany the outcome."""

    reply_id: int
    ticket_id: int
    mailbox: str
    message_id: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    token: str


def claim(
    session: Session,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
    on_abandoned: Callable[[int], None] | None = None,
) -> list[ReplyClaim]:
    """Lease up to ``limit`` replies that are due, oldest first.

    A reply given up on here (abandoned) is reported to ``on_abandoned`` in the
    same transaction, so its ``reply.failed`` event is not lost.
    """
    now = now or utcnow()
    token, rows = lease.claim(
        session,
        Reply,
        waiting=[ReplyState.QUEUED, ReplyState.RETRYING],
        due_at=col(Reply.available_at),
        leased=ReplyState.SENDING,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        now=now,
        returning=[
            col(Reply.id),
            col(Reply.ticket_id),
            col(Reply.mailbox),
            col(Reply.message_id),
            col(Reply.recipients),
            col(Reply.raw),
            col(Reply.attempts),
        ],
    )
    claims = []
    for r in rows:
        taken = ReplyClaim(r[0], r[1], r[2], r[3], tuple(r[4]), bytes(r[5]), r[6], token)
        # Every failed attempt is recorded and stops at max_attempts, so a reply
        # taken once more than that was abandoned by workers that died sending it.
        if taken.attempts > max_attempts:
            _transition(
                session,
                taken,
                state=ReplyState.FAILED,
                last_error="the worker sending this reply stopped without finishing "
                f"{max_attempts} times",
                error_class="abandoned",
            )
            if on_abandoned is not None:
                on_abandoned(taken.reply_id)
        else:
            claims.append(taken)
    return claims


def _transition(session: Session, claim: ReplyClaim, **values: object) -> None:
    lease.release(session, Reply, claim.reply_id, claim.token, leased=ReplyState.SENDING, **values)


def mark_sent(
    session: Session, claim: ReplyClaim, *, server_reply: str, queue_id: str | None
) -> None:
    _transition(
        session,
        claim,
        state=ReplyState.SENT,
        server_reply=server_reply,
        queue_id=queue_id,
        sent_at=utcnow(),
        last_error=None,
        error_class=None,
        diagnosis=None,
    )


def renew(session: Session, claim: ReplyClaim, *, lease_seconds: float) -> None:
    """Keep the lease of a reply about to be sent (see :func:`storage.lease.renew`):
    a reply whose lease lapsed while earlier ones waited on a slow relay would be
    taken, and sent, by another worker too."""
    lease.renew(
        session,
        Reply,
        claim.reply_id,
        claim.token,
        leased=ReplyState.SENDING,
        lease_seconds=lease_seconds,
    )


def mark_attempt_failed(
    session: Session,
    claim: ReplyClaim,
    *,
    error: str,
    error_class: str,
    diagnosis: dict[str, Any] | None,
    temporary: bool,
    max_attempts: int,
    retry_after: float,
    now: datetime | None = None,
    hold_for: str | None = None,
) -> ReplyState:
    """``retrying`` with the next attempt's time, ``held`` (a refused login: ``hold_for``
    names the credentials), or ``failed`` (permanent, or out of attempts)."""
    now = now or utcnow()
    if hold_for is not None and not temporary:
        state = ReplyState.HELD
    elif temporary and claim.attempts < max_attempts:
        state = ReplyState.RETRYING
    else:
        state = ReplyState.FAILED
    _transition(
        session,
        claim,
        state=state,
        last_error=error,
        error_class=error_class,
        diagnosis=diagnosis,
        available_at=now + timedelta(seconds=retry_after),
        held_credentials=hold_for if state == ReplyState.HELD else None,
    )
    return state


def _requeue(session: Session, where: ColumnElement[bool], now: datetime | None) -> list[int]:
    """Held replies back to the queue, due now, with their attempts counted afresh."""
    now = now or utcnow()
    held = and_(col(Reply.state) == ReplyState.HELD, where)
    return lease.requeue(
        session, Reply, held, queued=ReplyState.QUEUED, now=now, available_at=now,
        held_credentials=None,
    )  # fmt: skip


def release_held(
    session: Session, mailbox: str, credentials: str, now: datetime | None = None
) -> list[int]:
    """The mailbox's credentials are now ``credentials``: requeue what failed with others."""
    return _requeue(
        session,
        and_(
            func.lower(col(Reply.mailbox)) == mailbox.lower(),
            col(Reply.held_credentials) != credentials,
        ),
        now,
    )


def retry_held(
    session: Session,
    reply_ids: Sequence[int] = (),
    *,
    mailbox: str | None = None,
    now: datetime | None = None,
) -> list[int]:
    """An operator says try again: these held replies, or all of ``mailbox``'s, or all."""
    where: ColumnElement[bool] = true()
    if reply_ids:
        where = col(Reply.id).in_(list(reply_ids))
    elif mailbox is not None:
        where = func.lower(col(Reply.mailbox)) == mailbox.lower()
    return _requeue(session, where, now)


def mark_reply_bounced(session: Session, reply_message_id: str, reason: str) -> bool:
    """A bounce came back for a reply we sent: it failed after all. Whether one matched."""
    result = session.execute(
        update(Reply)
        .where(col(Reply.message_id) == reply_message_id, col(Reply.state) == ReplyState.SENT)
        .values(
            state=ReplyState.FAILED,
            last_error=f"bounced: {reason}",
            error_class="bounce",
            state_changed_at=utcnow(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reply_view(reply: Reply) -> ReplyOut:
    """A reply's delivery state: the keys of its state only (docs/json.md)."""
    view = ReplyOut(
        id=reply.id,
        ticket_id=reply.ticket_id,
        message_id=shown_message_id(reply.message_id),
        recipients=list(reply.recipients),
        state=reply.state.value,
        attempts=reply.attempts,
        created_at=iso(reply.created_at),
        state_changed_at=iso(reply.state_changed_at),
    )
    if reply.state == ReplyState.SENT:
        view.server_reply = reply.server_reply
        # The relay's own queue id from its 250 (ours is a message's trace_id).
        view.relay_queue_id = reply.queue_id
        view.sent_at = iso(reply.sent_at)
    if reply.state in (ReplyState.RETRYING, ReplyState.FAILED, ReplyState.HELD):
        view.last_error = reply.last_error
        view.error_class = reply.error_class
        if reply.diagnosis is not None:
            view.diagnosis = reply.diagnosis
    if reply.state == ReplyState.RETRYING:
        view.next_attempt_at = iso(reply.available_at)
    return view


def depth(session: Session) -> dict[str, int]:
    """Replies per delivery state, every state present (for status and metrics)."""
    return lease.depth(session, Reply, ReplyState)


def failed_replies(session: Session, *, limit: int = 500) -> list[dict[str, Any]]:
    """Replies given up on, newest first, with their ticket (the console's outbox page)."""
    rows = session.scalars(
        select(Reply)
        .where(col(Reply.state) == ReplyState.FAILED)
        .order_by(col(Reply.state_changed_at).desc(), col(Reply.id).desc())
        .limit(limit)
    ).all()
    return [{**reply_view(r).dump(), "mailbox": r.mailbox} for r in rows]


def retry_failed(
    session: Session, reply_ids: list[int], *, now: datetime | None = None
) -> list[int]:
    """Operator action: send failed replies again, with a fresh attempt count.

    The same bytes and Message-ID go out, so a copy that did arrive threads onto itself.
    """
    now = now or utcnow()
    failed = and_(col(Reply.id).in_(reply_ids), col(Reply.state) == ReplyState.FAILED)
    return lease.requeue(
        session, Reply, failed, queued=ReplyState.QUEUED, now=now, available_at=now
    )


def replies_of(session: Session, ticket_id: int) -> list[ReplyOut]:
    rows = session.scalars(
        select(Reply).where(col(Reply.ticket_id) == ticket_id).order_by(col(Reply.id))
    ).all()
    return [reply_view(r) for r in rows]
