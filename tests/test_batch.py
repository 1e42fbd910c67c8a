"""The batch when things go wrong around a message rather than in it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import Any

import sqlalchemy
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.work.batch import Batch, is_temporary
from ingest.work.reading import reading_pool
from ingest.work.tickets import file_message
from policy.config.model import Config
from storage.engine import make_engine
from storage.models import QueueEntry, QueueState
from storage.schema import prepare
from tests.support.mailflow import enqueue


def message(n: int) -> bytes:
    return (
        f"From: customer{n}@customer.example\r\nSubject: case {n}\r\n"
        f"Message-ID: <case-{n}@customer.example>\r\n\r\nhello {n}\r\n"
    ).encode()


def entries(engine: sqlalchemy.Engine) -> list[QueueEntry]:
    with Session(engine) as session:
        return list(session.scalars(select(QueueEntry).order_by(QueueEntry.id)))  # type: ignore[arg-type]


def test_an_interrupted_batch_gives_back_what_it_had_not_started(
    config: Config,
) -> None:
    """Cancelling mid-batch (shutdown) must not spend the other entries' attempts."""
    engine = make_engine(config.storage.url)
    prepare(engine)
    with Session(engine) as session, session.begin():
        for n in range(5):
            enqueue(session, message(n))
    inside, release = threading.Event(), threading.Event()

    def slow_second(*args: Any) -> int | None:
        if args[1].entry_id == 2:
            inside.set()
            release.wait(10)
        return file_message(*args)

    async def interrupt() -> None:
        task = asyncio.create_task(Batch(engine, slow_second).run(config))
        await asyncio.to_thread(inside.wait, 10)
        task.cancel()
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(interrupt())
    rows = entries(engine)
    assert rows[0].state == QueueState.DONE
    # The one interrupted mid-filing either finished or went back; the three never
    # started are queued again with no attempt spent. Nothing is left leased.
    assert (rows[1].state, rows[1].attempts) in [(QueueState.DONE, 1), (QueueState.QUEUED, 0)]
    assert [(r.state, r.attempts) for r in rows[2:]] == [(QueueState.QUEUED, 0)] * 3
    engine.dispose()


def test_database_trouble_is_ours_not_the_messages(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT * FROM no_such_table")
    except sqlalchemy.exc.DBAPIError as exc:
        temporary, operational = is_temporary(exc), isinstance(exc, sqlalchemy.exc.OperationalError)
    engine.dispose()
    assert temporary == operational
    assert not is_temporary(ValueError("a message we cannot parse"))


def test_a_temporary_failure_spends_no_attempt_a_message_failure_does(config: Config) -> None:
    engine = make_engine(config.storage.url)
    prepare(engine)
    with Session(engine) as session, session.begin():
        enqueue(session, message(1))
        enqueue(session, message(2))

    def trouble(*args: Any) -> int | None:
        if args[1].entry_id == 1:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed"))
        raise ValueError("cannot make sense of this message")

    result = asyncio.run(Batch(engine, trouble).run(config))
    ours, theirs = entries(engine)
    engine.dispose()
    assert (result.taken, result.deferred) == (2, 2)
    assert (ours.state, ours.attempts) == (QueueState.QUEUED, 0)
    assert ours.last_error is not None and ours.last_error.startswith("temporary: ")
    assert (theirs.state, theirs.attempts) == (QueueState.QUEUED, 1)
    assert theirs.last_error == "ValueError: cannot make sense of this message"


def test_a_parsing_process_that_dies_fails_its_group_not_the_worker(config: Config) -> None:
    """A reading process killed (the OOM killer, a crash in a C extension) breaks the
    pool: the group's entries spend their attempt and go back, the next batch
    parses them in a fresh pool and files them."""
    engine = make_engine(config.storage.url)
    prepare(engine)
    with Session(engine) as session, session.begin():
        for n in range(3):
            enqueue(session, message(n))
    pool = reading_pool()
    pids = [pool.submit(os.getpid).result() for _ in range(4)]
    os.kill(pids[0], signal.SIGKILL)
    batch = Batch(engine, file_message, executor=pool, new_executor=reading_pool)
    try:
        first = asyncio.run(batch.run(config))
        rows = entries(engine)
        assert (first.taken, first.deferred) == (3, 3)
        assert {(r.state, r.attempts) for r in rows} == {(QueueState.QUEUED, 1)}
        assert all(r.last_error and r.last_error.startswith("BrokenProcessPool") for r in rows)
        assert batch.executor is not pool
        again = asyncio.run(batch.drain(config))
    finally:
        batch.close()
        engine.dispose()
    assert again.tickets == 3
