"""Forgetting on schedule: evidence is kept for ``retention.days``, then purged.

What goes after the window:

* the raw bytes of a stored message whose every queue entry is ``done`` and
  has been for the whole window (the row stays, with ``purged_at``, so that
  ``trace`` still answers; tickets and their parsed content stay too);
* rejection records, headers included;
* quarantined mail nobody released (deleted, with a ``purged`` audit row);
* webhook events that were delivered or dead-lettered (their payloads are
  copies of tickets).

Queued, leased and failed mail is never purged: it is work not yet done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import quarantine
from storage.events import EventState, WebhookEvent
from storage.models import QueueEntry, QueueState, Rejection, StoredMessage, aware, utcnow

RETENTION_ACTOR = "retention"


@dataclass
class PurgeReport:
    cutoff: datetime
    raw_messages: list[str] = field(default_factory=list)  # trace ids
    rejections: int = 0
    oldest_rejection: datetime | None = None
    quarantined: list[int] = field(default_factory=list)  # queue entry ids
    webhook_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "raw_messages": self.raw_messages,
            "rejections": self.rejections,
            "oldest_rejection": aware(self.oldest_rejection).isoformat()
            if self.oldest_rejection
            else None,
            "quarantined": self.quarantined,
            "webhook_events": self.webhook_events,
        }


def _finished_raw(cutoff: datetime) -> Any:
    entries = col(QueueEntry.message_id) == col(StoredMessage.id)
    unfinished = or_(
        col(QueueEntry.state) != QueueState.DONE, col(QueueEntry.state_changed_at) >= cutoff
    )
    return and_(
        col(StoredMessage.raw).is_not(None),
        col(StoredMessage.received_at) < cutoff,
        exists().where(entries),
        ~exists().where(entries, unfinished),
    )


def purge(
    session: Session, *, days: int, now: datetime | None = None, dry_run: bool = False
) -> PurgeReport:
    """Purge (or with ``dry_run`` only list) what is older than ``days``, in one transaction."""
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff)

    report.raw_messages = list(
        session.scalars(
            select(col(StoredMessage.trace_id))
            .where(_finished_raw(cutoff))
            .order_by(col(StoredMessage.id))
        )
    )
    old_rejections = col(Rejection.created_at) < cutoff
    count, oldest = session.execute(
        select(func.count(), func.min(col(Rejection.created_at))).where(old_rejections)
    ).one()
    report.rejections, report.oldest_rejection = int(count), oldest
    report.quarantined = [
        entry_id
        for entry_id in session.scalars(
            select(col(QueueEntry.id))
            .where(
                col(QueueEntry.state) == QueueState.QUARANTINED,
                col(QueueEntry.state_changed_at) < cutoff,
            )
            .order_by(col(QueueEntry.id))
        )
        if entry_id is not None
    ]
    settled_events = and_(
        col(WebhookEvent.state).in_([EventState.DELIVERED, EventState.DEAD]),
        col(WebhookEvent.state_changed_at) < cutoff,
    )
    report.webhook_events = int(session.scalar(select(func.count()).where(settled_events)) or 0)
    if dry_run:
        return report

    session.execute(
        update(StoredMessage)
        .where(_finished_raw(cutoff))
        .values(raw=None, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(Rejection).where(old_rejections))
    session.execute(delete(WebhookEvent).where(settled_events))
    for entry_id in list(report.quarantined):
        try:
            quarantine.remove(session, entry_id, by=RETENTION_ACTOR, action="purged")
        except quarantine.NotQuarantined:  # released or deleted by an operator meanwhile
            report.quarantined.remove(entry_id)
    return report
