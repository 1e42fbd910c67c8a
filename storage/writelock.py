"""Whose turn it is to write an SQLite database: a lock beside the file.

Every SQLite transaction takes the database's write lock (``BEGIN
IMMEDIATE``, see :mod:`storage.engine`). A transaction that finds it taken
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, … up to 100 ms
between tries: with two intake processes committing a group each every
millisecond or so, a third of their transactions slept past the other's
commit, by 2.5 ms on average and up to 130 ms (BENCHMARKS.md, issue 17, fifth pass). A
``250`` waits for its group, so those sleeps were the sessions' latency.

The intake writers therefore take turns on a lock file of their own
(``<database>-writers``, ``flock``) before they begin. A writer whose turn
comes finds SQLite's lock free of the other intake writers (the batch and
the CLI still meet them in SQLite's busy handler); the wait for the turn is
short tries, never longer than :data:`LONGEST_NAP` past the release. It is
bounded as SQLite's is (:data:`WAIT`), so a holder that never lets go turns
into ``StorageUnavailable``, not a hung writer. The kernel drops the lock
of a process that dies; a lock file that cannot be opened leaves the
writers to SQLite's own waiting, with a warning. PostgreSQL, and an
in-memory database, need none of this: :func:`turn` is then a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator

from sqlalchemy import Engine

from policy.errors import StorageUnavailable

#: As long as SQLite's own ``busy_timeout`` in :mod:`storage.engine`.
WAIT = 30.0
FIRST_NAP, LONGEST_NAP = 0.00005, 0.001

log = logging.getLogger("mail.storage")


def lock_path(engine: Engine) -> str | None:
    """The lock file of ``engine``'s database, or None where none is needed."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return f"{url.database}-writers"


@contextlib.contextmanager
def turn(path: str | None, wait: float = WAIT) -> Iterator[None]:
    """Hold the write turn of the database whose lock file is ``path``."""
    if path is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        # The turns only spare SQLite's sleeps; its own lock keeps writes
        # correct. A lock file we may not open (created by root, a read-only
        # directory) must not refuse mail: wait as SQLite waits, and say so.
        _unusable(path, exc)
        yield
        return
    try:
        _acquire(fd, wait)
        yield  # closing the descriptor is what lets go
    finally:
        os.close(fd)


def _unusable(path: str, exc: OSError) -> None:
    if path not in _WARNED:
        _WARNED.add(path)
        log.warning("cannot open %s (%s): writers wait on SQLite's own lock", path, exc.strerror)


_WARNED: set[str] = set()


def _acquire(fd: int, wait: float) -> None:
    nap, deadline = FIRST_NAP, time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StorageUnavailable(f"no turn to write within {wait:g} seconds") from None
            time.sleep(nap)
            nap = min(nap * 2, LONGEST_NAP)
