"""Webhook events: what the helpdesk must hear about, kept until it has.

An event row is written in the same transaction as the change it reports
(a ticket filed, a reply sent, a message refused), so none is lost and none
is invented. Delivery claims rows like the inbound queue (:mod:`storage.lease`)::

    queued ──claim──▶ leased(owner, token, expires_at) ──2xx──▶ delivered
                        │   │
                        │   └── 4xx (not 408/429), or window over ──▶ dead ──retry──▶ queued
                        └── 5xx, 408, 429, timeout, refused ──▶ retrying(next attempt) ──▶ …

Order per ticket: an event is only claimed when no earlier event of the same
channel and ticket is still on its way (queued, leased or retrying). A dead
event does not hold the ticket's later events back — the helpdesk would
otherwise hear nothing more of that ticket until an operator acts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, insert, or_, select
from sqlalchemy.orm import Session, aliased
from sqlmodel import col

from storage import lease
from storage.models import EventState, WebhookEvent, aware, iso, utcnow

# The table and its states are defined with every other one in storage.models.
__all__ = [
    "EventClaim",
    "add",
    "claim",
    "deadline",
    "depth",
    "event_view",
    "list_events",
    "mark_dead",
    "mark_delivered",
    "mark_retrying",
    "replay",
]


_ON_THE_WAY = (EventState.QUEUED, EventState.LEASED, EventState.RETRYING)
_NEW_EVENT = insert(lease.table_of(WebhookEvent))


@dataclass(frozen=True)
class EventClaim:
    """An event leased for one delivery attempt; ``token`` fences the outcome."""

    id: int
    event_id: str
    type: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    window_start: datetime
    claimed_at: datetime
    token: str

    @property
    def retries_since(self) -> datetime:
        """Where the retry window opened: at the first attempt (after creation or replay)."""
        return self.claimed_at if self.attempts == 1 else self.window_start


def add(
    session: Session,
    *,
    type: str,
    channel: str,
    mailbox: str | None,
    ticket_id: int | None,
    data: dict[str, Any],
    now: datetime | None = None,
) -> str:
    """Queue one event in the caller's transaction; the payload is fixed from now on.

    Its ``event_id``. A Core statement built once: the batch queues an event for
    every message it files, and an ORM object with its flush cost more than the rest.
    """
    now = now or utcnow()
    event_id = f"evt_{uuid.uuid4().hex}"
    session.execute(
        _NEW_EVENT,
        {
            "event_id": event_id,
            "type": type,
            "channel": channel,
            "mailbox": mailbox,
            "ticket_id": ticket_id,
            "ordering_key": f"ticket:{ticket_id}" if ticket_id is not None else event_id,
            "payload": {
                "id": event_id,
                "type": type,
                "created_at": now.isoformat(),
                "channel": channel,
                "data": data,
            },
            "state": EventState.QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "window_start": now,
            "created_at": now,
            "state_changed_at": now,
        },
    )
    return event_id


def claim(
    session: Session, *, owner: str, limit: int, lease_seconds: float, now: datetime | None = None
) -> list[EventClaim]:
    """Lease due events whose earlier events (same channel and ticket) are all settled."""
    now = now or utcnow()
    earlier = aliased(WebhookEvent)
    token, rows = lease.claim(
        session,
        WebhookEvent,
        waiting=[EventState.QUEUED, EventState.RETRYING],
        due_at=col(WebhookEvent.next_attempt_at),
        only=~exists().where(
            col(earlier.channel) == col(WebhookEvent.channel),
            col(earlier.ordering_key) == col(WebhookEvent.ordering_key),
            col(earlier.id) < col(WebhookEvent.id),
            col(earlier.state).in_(_ON_THE_WAY),
        ),
        leased=EventState.LEASED,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        now=now,
        returning=[
            col(WebhookEvent.id),
            col(WebhookEvent.event_id),
            col(WebhookEvent.type),
            col(WebhookEvent.channel),
            col(WebhookEvent.payload),
            col(WebhookEvent.attempts),
            col(WebhookEvent.window_start),
        ],
    )
    return [EventClaim(r[0], r[1], r[2], r[3], r[4], r[5], aware(r[6]), now, token) for r in rows]


def _transition(session: Session, claim: EventClaim, **values: object) -> None:
    lease.release(session, WebhookEvent, claim.id, claim.token, leased=EventState.LEASED, **values)


def mark_delivered(session: Session, claim: EventClaim, *, status: int) -> None:
    _transition(
        session,
        claim,
        state=EventState.DELIVERED,
        last_status=status,
        last_error=None,
        delivered_at=utcnow(),
    )


def mark_retrying(
    session: Session, claim: EventClaim, *, error: str, status: int | None, at: datetime
) -> None:
    _transition(
        session,
        claim,
        state=EventState.RETRYING,
        last_status=status,
        last_error=error,
        next_attempt_at=at,
        window_start=claim.retries_since,
    )


def mark_dead(session: Session, claim: EventClaim, *, error: str, status: int | None) -> None:
    _transition(session, claim, state=EventState.DEAD, last_status=status, last_error=error)


def replay(
    session: Session,
    ids: Sequence[int | str] | None,
    *,
    from_states: Sequence[EventState],
    now: datetime | None = None,
) -> list[int]:
    """Operator action: send these events again, with a fresh attempt count and window.

    ``ids`` are row ids or event ids (``evt_…``); ``None`` means every event in
    ``from_states``. The event keeps its id, so a receiver that did see it can
    recognise the replay.
    """
    now = now or utcnow()
    condition: ColumnElement[bool] = col(WebhookEvent.state).in_(from_states)
    if ids is not None:
        numbers = [i for i in ids if isinstance(i, int)]
        names = [i for i in ids if isinstance(i, str)]
        condition = and_(
            condition,
            or_(col(WebhookEvent.id).in_(numbers), col(WebhookEvent.event_id).in_(names)),
        )
    return lease.requeue(
        session, WebhookEvent, condition, queued=EventState.QUEUED, now=now,
        next_attempt_at=now, window_start=now,
    )  # fmt: skip


def event_view(event: WebhookEvent) -> dict[str, Any]:
    """An event's delivery state as JSON-ready data (``events list --json``)."""
    return {
        "id": event.id,
        "event_id": event.event_id,
        "type": event.type,
        "channel": event.channel,
        "mailbox": event.mailbox,
        "ticket_id": event.ticket_id,
        "state": EventState(event.state).value,
        "attempts": event.attempts,
        "created_at": iso(event.created_at),
        "state_changed_at": iso(event.state_changed_at),
        "next_attempt_at": iso(event.next_attempt_at)
        if event.state in (EventState.QUEUED, EventState.RETRYING)
        else None,
        "delivered_at": iso(event.delivered_at),
        "last_status": event.last_status,
        "last_error": event.last_error,
    }


def list_events(
    session: Session, states: Sequence[EventState], *, limit: int = 1000
) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(WebhookEvent)
        .where(col(WebhookEvent.state).in_(states))
        .order_by(col(WebhookEvent.id))
        .limit(limit)
    ).all()
    return [event_view(e) for e in rows]


def deadline(window_start: datetime, retry_window: float) -> datetime:
    """When retries stop for an event whose window opened at ``window_start``."""
    return aware(window_start) + timedelta(seconds=retry_window)


def depth(session: Session) -> dict[str, int]:
    """Events per delivery state, every state present (for metrics)."""
    return lease.depth(session, WebhookEvent, EventState)
