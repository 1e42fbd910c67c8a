"""The batch when things go wrong around a message rather than in it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import sqlalchemy
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.model import Config
from policy.errors import StorageRefused, TempFail
from storage.engine import classify, make_engine
from storage.models import QueueEntry, QueueState, Ticket, TicketStatus
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
