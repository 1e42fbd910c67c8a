"""Database engines that keep the promise behind ``250``.

SQLite runs in WAL mode with ``synchronous=FULL``: with NORMAL a committed
transaction can vanish on power loss, and a ``250`` would be a lie. Every
SQLite transaction starts with ``BEGIN IMMEDIATE`` so that two writers never
deadlock upgrading read locks, which is also what makes the queue claim
correct without ``SKIP LOCKED``. PostgreSQL (psycopg 3) needs nothing special:
its commits are durable by default.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from policy.errors import InsufficientStorage, StorageRefused, StorageUnavailable

# A bench-only stand-in for a slow disk: every commit takes this much longer.
# It exists so `make bench` can show that group commit keeps durability cheap.
BENCH_COMMIT_DELAY_ENV = "FIRSTLINE_BENCH_COMMIT_DELAY_MS"


# A database host that vanishes without a word (power cut, partition) must
# not hold SMTP sessions for the kernel's default of many minutes: libpq gives
# up on connecting after connect_timeout, the kernel drops a connection whose
# sent data stays unacknowledged for tcp_user_timeout ms, and keepalives find
# an idle pooled connection whose peer is gone. Then the commit fails and the
# client gets 451 instead of waiting.
POSTGRES_NETWORK: dict[str, int] = {
    "connect_timeout": 10,
    "tcp_user_timeout": 20_000,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


# SQLSTATE 53100 disk_full, 53200 out_of_memory, 53300 too_many_connections…:
# PostgreSQL's "insufficient resources" class, its own lack of room.
_PG_DISK_FULL = "53100"


def classify(exc: BaseException) -> BaseException:
    """A database error as the error tree reads it: the one place that tells
    the database's trouble from a statement's (``policy/errors.py``).

    A full disk (SQLite's SQLITE_FULL, PostgreSQL's disk_full) is
    :class:`InsufficientStorage`; the database away, busy or cut off
    (``OperationalError``, ``InterfaceError``, a connection SQLAlchemy
    invalidated) :class:`StorageUnavailable`: both are temporary. Any other
    refusal (a constraint, a value, our bug) is :class:`StorageRefused`,
    permanent. What is not a database error comes back as it is.
    """
    original = getattr(exc, "orig", exc)
    if getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        getattr(original, "sqlstate", None) == _PG_DISK_FULL
    ):
        return InsufficientStorage(exc.__class__.__name__)
    if not isinstance(exc, DBAPIError):
        return exc
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        return StorageUnavailable(exc.__class__.__name__)
    return StorageRefused(exc.__class__.__name__)


def storage_error(exc: BaseException) -> StorageUnavailable:
    """What a session whose commit failed is told: whatever the reason, nothing
    was stored and the client must try again — ``452 4.3.1`` for a full disk,
    else ``451 4.3.0`` (our trouble is never a ``5xx``)."""
    found = classify(exc)
    if isinstance(found, StorageUnavailable):
        return found
    return StorageUnavailable(exc.__class__.__name__)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``; creates the SQLite file's directory if needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        _configure_sqlite(engine)
    else:
        # URL parameters win, so an operator can tune these per deployment.
        network = {k: v for k, v in POSTGRES_NETWORK.items() if k not in parsed.query}
        engine = create_engine(
            parsed, pool_size=pool_size, pool_pre_ping=True, connect_args=network
        )
    delay_ms = float(os.environ.get(BENCH_COMMIT_DELAY_ENV, "0") or 0)
    if delay_ms > 0:
        _slow_commits(engine, delay_ms / 1000)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _slow_commits(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "commit")
    def _on_commit(_connection: Any) -> None:
        time.sleep(seconds)
