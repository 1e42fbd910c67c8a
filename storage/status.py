"""The state of the store at a glance: ``firstline status`` and the metrics read this.

Everything here is a handful of aggregate queries, cheap enough to run on
every Prometheus scrape; the outbox is the replies' own queue (``storage/outbox.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import outbox
from storage.models import (
    BatchRun,
    QueueEntry,
    QueueState,
    Rejection,
    StoredMessage,
    aware,
    utcnow,
)


def queue_depth(session: Session) -> dict[str, int]:
    """Entries per state, every state present (zero when empty)."""
    counts = dict.fromkeys((s.value for s in QueueState), 0)
    for state, count in session.execute(
        select(col(QueueEntry.state), func.count()).group_by(col(QueueEntry.state))
    ):
        counts[QueueState(state).value] = int(count)
    return counts


def oldest_waiting(session: Session) -> datetime | None:
    """Arrival of the oldest entry still queued or leased."""
    value = session.scalar(
        select(func.min(col(QueueEntry.created_at))).where(
            col(QueueEntry.state).in_([QueueState.QUEUED, QueueState.LEASED])
        )
    )
    return aware(value) if value else None


def batch_runs(session: Session) -> list[dict[str, Any]]:
    runs = session.scalars(select(BatchRun).order_by(col(BatchRun.finished_at).desc())).all()
    return [
        {
            "owner": run.owner,
            "started_at": aware(run.started_at).isoformat(),
            "finished_at": aware(run.finished_at).isoformat(),
            "duration": run.duration,
            "taken": run.taken,
            "tickets": run.tickets,
            "failed": run.failed,
            "deferred": run.deferred,
            "quarantined": run.quarantined,
            "error": run.error,
        }
        for run in runs
    ]


def record_batch_run(session: Session, run: BatchRun) -> None:
    """Keep the newest run of ``run.owner`` (one row per worker)."""
    session.merge(run)


def rejections_since(session: Session, since: datetime) -> dict[str, int]:
    rows = session.execute(
        select(col(Rejection.reason), func.count())
        .where(col(Rejection.created_at) >= since)
        .group_by(col(Rejection.reason))
    )
    return {reason: int(count) for reason, count in rows}


def hourly(session: Session, now: datetime, hours: int = 24) -> list[dict[str, Any]]:
    """Accepted and refused messages per hour, oldest hour first (the console's chart).

    Counted in Python from the timestamps of the window: one query each, the
    same on SQLite and PostgreSQL (whose hour-truncating functions differ).
    """
    end = aware(now).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    counts = {"accepted": [0] * hours, "refused": [0] * hours}
    for kind, column in (
        ("accepted", col(StoredMessage.received_at)),
        ("refused", col(Rejection.created_at)),
    ):
        for (at,) in session.execute(select(column).where(column >= start, column < end)):
            index = int((aware(at) - start).total_seconds() // 3600)
            if 0 <= index < hours:
                counts[kind][index] += 1
    return [
        {
            "hour": (start + timedelta(hours=i)).isoformat(),
            "accepted": counts["accepted"][i],
            "refused": counts["refused"][i],
        }
        for i in range(hours)
    ]


def summary(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``firstline status --json`` prints."""
    now = now or utcnow()
    oldest = oldest_waiting(session)
    return {
        "queue": queue_depth(session),
        "oldest_waiting": oldest.isoformat() if oldest else None,
        "oldest_waiting_seconds": (now - oldest).total_seconds() if oldest else 0.0,
        "batches": batch_runs(session),
        "rejections_24h": rejections_since(session, now - timedelta(hours=24)),
        "outbox": outbox.depth(session),
    }
