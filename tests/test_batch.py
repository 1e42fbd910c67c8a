"""The batch when things go wrong around a message rather than in it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.channels.webhooks import Deliverer
from ingest.work.batch import Batch
from ingest.work.reading import reading_pool
from ingest.work.tickets import file_message
from ingest.work.worker import Worker
from policy.config.loading import parse_config
from policy.config.model import Config
from policy.errors import StorageRefused, TempFail
from storage.engine import classify, make_engine
from storage.models import QueueEntry, QueueState, Ticket, TicketStatus
from storage.schema import prepare
from tests.support.mailflow import enqueue
from tests.support.server import ServerThread
from tests.support.stores import BASE_CONFIG, merge


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
        # One turn of the loop delivers the cancellation (its wake-up was queued
        # first), so the batch has said stop before the message in hand goes on.
        await asyncio.sleep(0)
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
        found, operational = classify(exc), isinstance(exc, sqlalchemy.exc.OperationalError)
    engine.dispose()
    # SQLite says "no such table" as an OperationalError, PostgreSQL as a ProgrammingError.
    assert isinstance(found, TempFail if operational else StorageRefused)
    unparseable = ValueError("a message we cannot parse")
    assert classify(unparseable) is unparseable


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


def test_a_plain_batch_reopens_a_ticket_when_the_customer_writes_again(config: Config) -> None:
    """The rule lives in filing: a Batch built with nothing around ``file_message``
    (tests, ``bench/``, ``firstline process``) reopens like ``serve`` does."""
    engine = make_engine(config.storage.url)
    prepare(engine)
    batch = Batch(engine, file_message)

    def arrives(raw: bytes) -> None:
        with Session(engine) as session, session.begin():
            enqueue(session, raw)
        assert asyncio.run(batch.run(config)).tickets == 1

    def status(value: TicketStatus | None = None) -> str:
        with Session(engine) as session, session.begin():
            ticket = session.scalars(select(Ticket)).one()
            if value is not None:
                ticket.status = value
            return ticket.status

    answer = (
        "From: customer1@customer.example\r\nSubject: Re: case 1\r\n"
        "Message-ID: <again-{n}@customer.example>\r\nIn-Reply-To: <case-1@customer.example>\r\n"
        "{extra}\r\nstill broken\r\n"
    )
    arrives(message(1))
    for was in (TicketStatus.CLOSED, TicketStatus.PENDING):
        status(was)
        arrives(answer.format(n=was.value, extra="").encode())
        assert status() == TicketStatus.OPEN
    # An out-of-office notice is not the customer writing again.
    status(TicketStatus.PENDING)
    arrives(answer.format(n="away", extra="Auto-Submitted: auto-replied\r\n").encode())
    assert status() == TicketStatus.PENDING
    engine.dispose()


@pytest.mark.parametrize("loop", ["worker", "webhooks"])
def test_a_stop_that_comes_with_a_poke_still_stops(tmp_path: Path, loop: str) -> None:
    """A loop cancelled just as it is poked (a batch or a delivery ends as the
    server stops) must end: on Python 3.11 ``wait_for`` let the poke win and the
    loop ran on, so ``App.stop`` never returned."""
    config = parse_config(
        yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": f"sqlite:///{tmp_path}/f.db"}})),
        "test.yaml",
    )
    engine = make_engine(config.storage.url)
    prepare(engine)
    worker = Worker(lambda: config, engine)
    deliverer = Deliverer(lambda: config, engine, worker.batch.owner, poll=3600)

    async def stop_as_poked() -> None:
        if loop == "worker":
            task = asyncio.create_task(worker.run())
            for _ in range(6000):  # until its first batch is done: then it waits for a poke
                if worker.last is not None:
                    break
                await asyncio.sleep(0.01)
            poke = worker.poke
        else:
            task = asyncio.create_task(deliverer.run())
            for _ in range(20):  # no webhook channel, no I/O: it soon waits for a poke
                await asyncio.sleep(0)
            poke = deliverer.poke
        poke()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=30)
        assert done, f"the {loop} loop did not stop"
        assert task.cancelled()

    asyncio.run(stop_as_poked())
    engine.dispose()


def test_stop_ends_even_a_task_that_swallowed_its_cancellation(tmp_path: Path) -> None:
    """A stop always ends: a task that lost its first cancellation (as the loops
    above once did) is cancelled again, and App.stop returns."""
    config = parse_config(
        yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": f"sqlite:///{tmp_path}/f.db"}})),
        "test.yaml",
    )
    server = ServerThread(config).start()
    ended = threading.Event()

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # lost
            await asyncio.sleep(3600)
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    async def add() -> None:
        server.app._tasks.append(asyncio.create_task(stubborn(), name="stubborn"))

    server.call(add())
    server.call(server.app.stop(grace=0.5), timeout=60)
    assert ended.is_set()
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(10)
    server.loop.close()


@pytest.mark.postgres
def test_stop_lets_a_thread_in_a_transaction_finish_before_closing_the_store(
    postgres_schema_url: str,
) -> None:
    """A cancelled to_thread leaves its thread running: the store is closed after
    it, or its connection goes back to a disposed pool and is never closed
    (psycopg's "deleted while still open" ResourceWarning, an error here)."""
    config = parse_config(
        yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": postgres_schema_url}})), "t.yaml"
    )
    server = ServerThread(config).start()
    inside, finished = threading.Event(), threading.Event()

    def transaction() -> None:
        with server.engine.begin() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
            inside.set()
            time.sleep(0.3)  # still at work when the stop comes
        finished.set()

    async def add() -> None:
        task = asyncio.create_task(asyncio.to_thread(transaction), name="in a transaction")
        server.app._tasks.append(task)

    server.call(add())
    assert inside.wait(30)
    server.stop()
    assert finished.is_set()
    gc.collect()


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
