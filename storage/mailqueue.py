"""The durable inbound queue.

Every state change is one explicit, timestamped transition::

    queued ──claim──▶ leased(owner, token, expires_at) ──finish──▶ done
      ▲                 │  │
      │   temporary /   │  └──fail (attempts ≥ max)──▶ failed ──retry (operator)──▶ queued
      └── attempts<max ─┘
    quarantined ──release (operator)──▶ queued

A claim hands out a lease token; finishing and failing check it (fencing), so
a worker that was presumed dead and comes back cannot overwrite a newer claim,
and a message becomes exactly one ticket message. A claim spends no attempt:
:func:`start` does, for the one entry the worker turns to, so the entries
claimed with a message that kills its worker lose nothing. On PostgreSQL the claim uses
``FOR UPDATE SKIP LOCKED``; on SQLite (no SKIP LOCKED, and SQLAlchemy silently
drops it) the same ``UPDATE … RETURNING`` runs inside ``BEGIN IMMEDIATE``
(see ``storage/engine.py``), which serialises claimers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, bindparam, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import lease
from storage.lease import LeaseLost
from storage.models import QueueEntry, QueueState, StoredMessage, utcnow

__all__ = [
    "Claim", "LeaseLost", "claim", "fail", "finish", "finish_many", "note_outcomes", "quarantine",
    "requeue", "start", "start_group",
]  # fmt: skip

# Built once, on the table (an executemany of an ORM update would synchronise
# the session's objects): filing notes outcomes in the hot path.
_QUEUE = lease.table_of(QueueEntry)
_NOTE = update(_QUEUE).where(_QUEUE.c.id == bindparam("b_id"))


@dataclass(frozen=True)
class Claim:
    """A leased queue entry; ``token`` must accompany every later transition.

    ``attempts`` counts this one once the entry is ``started``.
    """

    entry_id: int
    message_id: int
    mailbox: str
    digest: str
    attempts: int
    token: str
    started: bool = False


def claim(
    session: Session,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> list[Claim]:
    """Lease up to ``limit`` entries that are due, in arrival order."""
    now = now or utcnow()
    _fail_exhausted_leases(session, now, max_attempts)
    token, rows = lease.claim(
        session,
        QueueEntry,
        waiting=[QueueState.QUEUED],
        due_at=col(QueueEntry.available_at),
        leased=QueueState.LEASED,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        now=now,
        count_attempt=False,
        returning=[
            col(QueueEntry.id),
            col(QueueEntry.message_id),
            col(QueueEntry.mailbox),
            col(QueueEntry.digest),
            col(QueueEntry.attempts),
        ],
    )
    return [Claim(r[0], r[1], r[2], r[3], r[4], token) for r in rows]


def _fail_exhausted_leases(session: Session, now: datetime, max_attempts: int) -> None:
    """An entry whose worker died on it ``max_attempts`` times is poison: stop taking it."""
    session.execute(
        update(QueueEntry)
        .where(
            col(QueueEntry.state) == QueueState.LEASED,
            col(QueueEntry.lease_expires_at) < now,
            col(QueueEntry.attempts) >= max_attempts,
        )
        .values(
            state=QueueState.FAILED,
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
            last_error="the worker processing this message stopped without finishing it "
            f"{max_attempts} times",
            state_changed_at=now,
        )
    )


def _transition(session: Session, claim: Claim, **values: object) -> None:
    lease.release(
        session, QueueEntry, claim.entry_id, claim.token, leased=QueueState.LEASED, **values
    )


def finish(session: Session, claim: Claim, *, ticket_message_id: int | None) -> None:
    """Mark done in the caller's transaction, which also holds the ticket rows."""
    finish_many(session, [(claim, ticket_message_id)])


def finish_many(session: Session, finished: Sequence[tuple[Claim, int | None]]) -> None:
    """:func:`finish` for a filed group, in one statement with every lease token
    checked: all done, or :class:`LeaseLost` and the transaction must roll back."""
    done: list[tuple[int, str, dict[str, object]]] = [
        (c.entry_id, c.token, dict(state=QueueState.DONE, ticket_message_id=i, last_error=None))
        for c, i in finished
    ]
    lease.release_many(session, QueueEntry, done, leased=QueueState.LEASED)


def note_outcomes(session: Session, notes: Sequence[tuple[Claim, str]]) -> None:
    """Say why these entries make no new ticket message, in the filing transaction
    (whose :func:`finish_many` checks the leases and leaves the notes in place)."""
    if notes:
        session.execute(_NOTE, [{"b_id": c.entry_id, "outcome": outcome} for c, outcome in notes])


def quarantine(session: Session, claim: Claim, *, reason: str) -> None:
    _transition(session, claim, state=QueueState.QUARANTINED, last_error=reason)


def fail(
    session: Session,
    claim: Claim,
    *,
    error: str,
    max_attempts: int,
    temporary: bool = False,
    retry_after: float = 0,
) -> QueueState:
    """Record a failure: back to the queue, or ``failed`` for good after ``max_attempts``.

    A temporary failure (scanner away, database hiccup) does not count as an
    attempt: the message itself is not at fault.
    """
    state = QueueState.QUEUED if temporary or claim.attempts < max_attempts else QueueState.FAILED
    _transition(
        session,
        claim,
        state=state,
        attempts=claim.attempts - 1 if temporary and claim.started else claim.attempts,
        last_error=error,
        available_at=utcnow() + timedelta(seconds=retry_after),
    )
    return state


def start(session: Session, claim: Claim, *, lease_seconds: float) -> Claim:
    """Turn to ``claim``: renew its lease, spend its attempt (:func:`storage.lease.renew`)."""
    started = start_group(session, [claim], lease_seconds=lease_seconds)
    if not started:
        raise LeaseLost(f"queue row {claim.entry_id} is no longer leased to this worker")
    return started[0]


def start_group(session: Session, claims: Sequence[Claim], *, lease_seconds: float) -> list[Claim]:
    """Turn to several claims of one lease at once (one statement): those still ours,
    each with its attempt spent."""
    held: set[int] = set()
    for token in {c.token for c in claims}:
        held |= lease.renew_many(
            session, QueueEntry, [c.entry_id for c in claims if c.token == token], token,
            leased=QueueState.LEASED, lease_seconds=lease_seconds, count_attempt=True,
        )  # fmt: skip
    return [replace(c, attempts=c.attempts + 1, started=True) for c in claims if c.entry_id in held]


def requeue(
    session: Session, entry_ids: Sequence[int] | None, *, from_states: Sequence[QueueState]
) -> list[int]:
    """Operator action: put entries back in the queue with a fresh attempt count.

    ``entry_ids=None`` means every entry in ``from_states``.
    """
    condition: ColumnElement[bool] = col(QueueEntry.state).in_(from_states)
    if entry_ids is not None:
        condition = and_(condition, col(QueueEntry.id).in_(entry_ids))
    now = utcnow()
    return lease.requeue(
        session, QueueEntry, condition, queued=QueueState.QUEUED, now=now, available_at=now
    )


def entries_named(
    session: Session, refs: Sequence[int | str], *, states: Sequence[QueueState] | None = None
) -> list[int]:
    """The entry ids that ``refs`` name, in order: numbers as they are, a queue ID
    (``250 … queued as ID``) as every entry of that message (one per mailbox)."""
    ids: list[int] = []
    for ref in refs:
        query = select(col(QueueEntry.id))
        if isinstance(ref, int):
            query = query.where(col(QueueEntry.id) == ref)
        else:
            query = query.join(
                StoredMessage, col(StoredMessage.id) == col(QueueEntry.message_id)
            ).where(col(StoredMessage.trace_id) == ref.upper())
        if states is not None:
            query = query.where(col(QueueEntry.state).in_(states))
        ids += [
            i for i in session.scalars(query.order_by(col(QueueEntry.id))) if i and i not in ids
        ]
    return ids
