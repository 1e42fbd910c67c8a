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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import quarantine
from storage.models import (
    EventState,
    QueueEntry,
    QueueState,
    Rejection,
    StoredMessage,
    WebhookEvent,
    aware,
    utcnow,
)

RETENTION_ACTOR = "retention"
# Rows per purge transaction: small enough that a commit waiting behind one
# waits milliseconds, large enough that 50,000 rows take a few seconds.
CHUNK = 500


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
    engine: Engine,
    *,
    days: int,
    now: datetime | None = None,
    dry_run: bool = False,
    chunk: int = CHUNK,
) -> PurgeReport:
    """Purge (or with ``dry_run`` only list) what is older than ``days``.

    In transactions of at most ``chunk`` rows each, with a pause after each
    as long as the transaction took: on SQLite a transaction holds the one
    write lock, and intake commits (which answer ``250``) must get it between
    two chunks instead of waiting out the whole purge into a ``451``.
    Everything purged is past retention whatever happens meanwhile, so a purge
    interrupted halfway is simply finished by the next one.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    report = PurgeReport(cutoff=cutoff)
    old_rejections = col(Rejection.created_at) < cutoff
    settled_events = and_(
        col(WebhookEvent.state).in_([EventState.DELIVERED, EventState.DEAD]),
        col(WebhookEvent.state_changed_at) < cutoff,
    )
    with Session(engine) as session, session.begin():
        count, oldest = session.execute(
            select(func.count(), func.min(col(Rejection.created_at))).where(old_rejections)
        ).one()
        report.oldest_rejection = oldest
        quarantined = [
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
        if dry_run:
            report.rejections = int(count)
            report.quarantined = quarantined
            report.raw_messages = list(
                session.scalars(
                    select(col(StoredMessage.trace_id))
                    .where(_finished_raw(cutoff))
                    .order_by(col(StoredMessage.id))
                )
            )
            report.webhook_events = int(
                session.scalar(select(func.count()).where(settled_events)) or 0
            )
            return report

    last_id = 0

    def raw_bytes(session: Session) -> int:
        nonlocal last_id
        ids: list[int] = list(
            session.scalars(
                select(col(StoredMessage.id))
                .where(_finished_raw(cutoff), col(StoredMessage.id) > last_id)
                .order_by(col(StoredMessage.id))
                .limit(chunk)
            )
        )
        if ids:
            last_id = ids[-1]
            report.raw_messages.extend(
                session.scalars(
                    update(StoredMessage)
                    .where(col(StoredMessage.id).in_(ids), _finished_raw(cutoff))
                    .values(raw=None, purged_at=now)
                    .returning(col(StoredMessage.trace_id))
                    .execution_options(synchronize_session=False)
                )
            )
        return len(ids)

    def rejections(session: Session) -> int:
        done = _delete_some(session, Rejection, old_rejections, chunk)
        report.rejections += done
        return done

    def webhook_events(session: Session) -> int:
        done = _delete_some(session, WebhookEvent, settled_events, chunk)
        report.webhook_events += done
        return done

    def quarantined_mail(session: Session) -> int:
        taken = quarantined[:chunk]
        del quarantined[:chunk]
        for entry_id in taken:
            try:
                quarantine.remove(session, entry_id, by=RETENTION_ACTOR, action="purged")
                report.quarantined.append(entry_id)
            except quarantine.NotQuarantined:  # released or deleted by an operator meanwhile
                pass
        return len(taken)

    for step in (raw_bytes, rejections, quarantined_mail, webhook_events):
        _repeat(engine, step, chunk)
    return report


def _delete_some(session: Session, model: Any, where: Any, chunk: int) -> int:
    """Delete up to ``chunk`` rows of ``model`` matching ``where``; how many went."""
    some = select(col(model.id)).where(where).limit(chunk)
    result: Any = session.execute(delete(model).where(col(model.id).in_(some)))
    return int(result.rowcount or 0)


def _repeat(engine: Engine, step: Callable[[Session], int], chunk: int) -> None:
    """Run ``step`` in transactions of its own until it finds less than a chunk to do."""
    while True:
        started = time.monotonic()
        with Session(engine) as session, session.begin():
            done = step(session)
        if done < chunk:
            return
        time.sleep(time.monotonic() - started)
