"""Leases with fencing tokens: the claim shape every work table shares.

The inbound queue, the outbox and the webhook events are claimed the same
way (:func:`claim`): one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
LOCKED) RETURNING`` hands a batch of due rows to one owner with one token
and an expiry, and every later transition names that token, so a worker
presumed dead that comes back cannot overwrite a newer claim. On SQLite,
which has no SKIP LOCKED, the same statement runs under ``BEGIN IMMEDIATE``
(see ``storage/engine.py``). A table using this has an ``id``, a ``state``
and the columns of :class:`storage.models.LeaseColumns`.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    Update,
    and_,
    bindparam,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session
from sqlmodel import SQLModel

from policy.errors import TempFail
from storage.models import LeaseColumns, utcnow


class LeaseLost(TempFail):
    """The lease expired and someone else took the row; undo this work."""


def table_of(model: type[SQLModel]) -> Table:
    table = inspect(model).local_table
    assert isinstance(table, Table)
    return table


def claim(
    session: Session,
    model: type[LeaseColumns],
    *,
    waiting: Sequence[str],
    due_at: Mapped[datetime],
    leased: str,
    owner: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
    returning: Sequence[Any],
    only: ColumnElement[bool] | None = None,
    count_attempt: bool = True,
) -> tuple[str, list[Any]]:
    """Lease up to ``limit`` due rows, oldest first: the token, and the rows in id order.

    Due is a row in a ``waiting`` state whose ``due_at`` has come, or a
    ``leased`` row whose lease expired: its worker is presumed dead, and the
    row is taken again. ``only`` narrows that further; ``returning`` names
    the columns to hand back, ``id`` among them. ``count_attempt=False``
    leaves the attempt to be counted by :func:`renew` when work on a row
    starts, for a table whose rows are worked on one by one.
    """
    table = table_of(model)
    due = or_(
        and_(table.c.state.in_(waiting), due_at <= now),
        and_(table.c.state == leased, table.c.lease_expires_at < now),
    )
    token = secrets.token_hex(16)
    candidates = (
        select(table.c.id)
        .where(due if only is None else and_(due, only))
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(table)
        .where(table.c.id.in_(candidates))
        .values(
            state=leased,
            lease_owner=owner,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=table.c.attempts + 1 if count_attempt else table.c.attempts,
            state_changed_at=now,
        )
        .returning(*returning)
    ).all()
    return token, sorted(rows, key=lambda row: row.id)


def release(
    session: Session,
    model: type[LeaseColumns],
    row_id: int,
    token: str,
    *,
    leased: str,
    **values: object,
) -> None:
    """Leave the leased state, if the lease is still ours; else :class:`LeaseLost`."""
    release_many(session, model, [(row_id, token, values)], leased=leased)


def release_many(
    session: Session,
    model: type[LeaseColumns],
    rows: Sequence[tuple[int, str, dict[str, object]]],
    *,
    leased: str,
) -> None:
    """:func:`release` for several rows (id, token, values; the same value names
    for all) in one executemany: all of them, or :class:`LeaseLost` — the
    caller's transaction must then roll back, since the others were released."""
    if not rows:
        return
    now = utcnow()
    result = session.execute(
        _release_statement(table_of(model)),
        [
            {
                "b_id": row_id,
                "b_token": token,
                "b_leased": leased,
                "lease_owner": None,
                "lease_token": None,
                "lease_expires_at": None,
                "state_changed_at": now,
                **values,
            }
            for row_id, token, values in rows
        ],
    )
    if result.rowcount != len(rows):  # type: ignore[attr-defined]
        ids = ", ".join(str(r[0]) for r in rows)
        raise LeaseLost(f"{table_of(model).name} row(s) {ids}: not all leased to this worker now")


@functools.cache
def _release_statement(table: Table) -> Update:
    """One statement per table, its SET clause taken from the parameters: built
    once, so the batch's hot path pays no statement building per message."""
    return update(table).where(
        table.c.id == bindparam("b_id"),
        table.c.lease_token == bindparam("b_token"),
        table.c.state == bindparam("b_leased"),
    )


def requeue(
    session: Session,
    model: type[LeaseColumns],
    condition: ColumnElement[bool],
    *,
    queued: str,
    now: datetime,
    **values: object,
) -> list[int]:
    """Operator action: the matching rows back to ``queued``, attempts from zero, no lease."""
    table = table_of(model)
    rows = session.execute(
        update(table)
        .where(condition)
        .values(
            state=queued,
            attempts=0,
            state_changed_at=now,
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
            **values,
        )
        .returning(table.c.id)
    ).all()
    return sorted(r[0] for r in rows if r[0] is not None)


def renew(
    session: Session,
    model: type[LeaseColumns],
    row_id: int,
    token: str,
    *,
    leased: str,
    lease_seconds: float,
    count_attempt: bool = False,
) -> None:
    """Push a held lease's expiry out again before starting work on the row.

    A batch leases many rows at once and works through them one by one; a
    slow scanner or relay must not let the lease of a row not yet started
    lapse, or a second worker would take it and both would do the work.
    ``count_attempt`` spends the row's attempt now (see :func:`take`).
    Raises :class:`LeaseLost` if the row is no longer ours: skip it.
    """
    held = renew_many(
        session, model, [row_id], token, leased=leased, lease_seconds=lease_seconds,
        count_attempt=count_attempt,
    )  # fmt: skip
    if not held:
        raise LeaseLost(f"{table_of(model).name} row {row_id} is no longer leased to this worker")


def renew_many(
    session: Session,
    model: type[SQLModel],
    row_ids: Sequence[int],
    token: str,
    *,
    leased: str,
    lease_seconds: float,
    count_attempt: bool = False,
) -> set[int]:
    """:func:`renew` for rows worked on together, in one statement; the ids still ours."""
    table = table_of(model)
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if count_attempt:
        values["attempts"] = table.c.attempts + 1
    rows = session.execute(
        update(table)
        .where(table.c.id.in_(list(row_ids)), table.c.lease_token == token, table.c.state == leased)
        .values(**values)
        .returning(table.c.id)
    ).all()
    return {r[0] for r in rows}


def depth(session: Session, model: type[SQLModel], states: type[StrEnum]) -> dict[str, int]:
    """Rows per state, every state present (for status and metrics)."""
    table = table_of(model)
    counts = dict.fromkeys((s.value for s in states), 0)
    for state, count in session.execute(
        select(table.c.state, func.count()).group_by(table.c.state)
    ):
        counts[states(state).value] = int(count)
    return counts


def retry_delay(attempts: int, first: float, cap: float) -> float:
    """Exponential backoff: ``first``, twice that, four times … never more than ``cap``."""
    return float(min(cap, first * 2 ** max(0, min(attempts - 1, 32))))
