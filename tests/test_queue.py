"""Claims, leases and fencing on real SQLite and PostgreSQL connections.

The promise under test: a queue entry becomes exactly one ticket message, even
when workers race for it, or when a worker's lease expires while it is still
working and another worker takes the entry over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.model import Config
from policy.message.mime import parse_message
from storage import mailqueue as queue
from storage.engine import make_engine
from storage.lease import LeaseLost
from storage.models import QueueEntry, QueueState, StoredMessage, Ticket, TicketMessage, utcnow
from storage.schema import prepare

MAILBOX = "support@example.com"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=10)
    prepare(engine)
    yield engine
    engine.dispose()


def enqueue(engine: Engine, count: int) -> list[int]:
    """``count`` distinct, well-formed messages for one mailbox; the queue entry ids."""
    with Session(engine) as session, session.begin():
        entries = []
        for n in range(count):
            raw = (
                f"From: Customer {n} <c{n}@customer.example>\r\nTo: {MAILBOX}\r\n"
                f"Subject: Question {n}\r\nMessage-ID: <q{n}@customer.example>\r\n\r\n"
                f"Body {n}\r\n"
            ).encode()
            message = StoredMessage(
                trace_id=f"T{n:08d}", digest=f"{n:064d}", size=len(raw), raw=raw,
                proto="ESMTP", client_ip="127.0.0.1", mail_from=f"c{n}@customer.example",
                rcpt_tos=[MAILBOX],
            )  # fmt: skip
            session.add(message)
            session.flush()
            assert message.id is not None
            entries.append(
                QueueEntry(message_id=message.id, mailbox=MAILBOX, digest=message.digest)
            )
        session.add_all(entries)
        session.flush()
        return [e.id for e in entries if e.id is not None]


def take(
    engine: Engine,
    owner: str,
    limit: int,
    *,
    lease_seconds: float = 60,
    max_attempts: int = 3,
    now: datetime | None = None,
) -> list[queue.Claim]:
    with Session(engine) as session, session.begin():
        return queue.claim(
            session,
            owner=owner,
            limit=limit,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            now=now,
        )


def start(engine: Engine, claim: queue.Claim) -> queue.Claim:
    with Session(engine) as session, session.begin():
        return queue.start(session, claim, lease_seconds=60)


def finish(engine: Engine, claim: queue.Claim) -> None:
    with Session(engine) as session, session.begin():
        queue.finish(session, claim, ticket_message_id=None)


def states(engine: Engine) -> Counter[str]:
    with Session(engine) as session:
        return Counter(str(s) for s in session.scalars(select(col(QueueEntry.state))))


def count(engine: Engine, model: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_claims_lease_in_arrival_order_and_never_hand_out_an_entry_twice(engine: Engine) -> None:
    ids = enqueue(engine, 5)
    first = take(engine, "a", 3)
    second = take(engine, "b", 3)
    assert [c.entry_id for c in first] == ids[:3]
    assert [c.entry_id for c in second] == ids[3:]
    assert take(engine, "c", 3) == []
    assert {c.token for c in first} != {c.token for c in second}
    assert all(c.attempts == 0 for c in first + second)  # spent only when started
    with Session(engine) as session:
        owners = {e.id: e.lease_owner for e in session.scalars(select(QueueEntry))}
    assert owners == {ids[0]: "a", ids[1]: "a", ids[2]: "a", ids[3]: "b", ids[4]: "b"}


def test_threads_racing_on_real_connections_share_the_queue_exactly(engine: Engine) -> None:
    ids = enqueue(engine, 400)
    start = threading.Barrier(6)
    taken: list[list[int]] = [[] for _ in range(6)]
    errors: list[BaseException] = []

    holding = threading.Barrier(6, timeout=60)

    def work(slot: int) -> None:
        start.wait()
        try:
            while claims := take(engine, f"w{slot}", 7):
                if not taken[slot]:
                    holding.wait()  # all six hold a claim at once before anyone finishes
                taken[slot].extend(c.entry_id for c in claims)
                for claim in claims:
                    finish(engine, claim)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    everything = [entry for mine in taken for entry in mine]
    assert sorted(everything) == ids  # every entry once, none twice
    assert states(engine) == Counter({QueueState.DONE.value: 400})


def test_postgres_claim_skips_rows_locked_by_an_open_claim(postgres_schema_url: str) -> None:
    """SKIP LOCKED, not waiting: a claim in flight does not stall the next worker."""
    engine = make_engine(postgres_schema_url)
    try:
        prepare(engine)
        ids = enqueue(engine, 6)
        with Session(engine) as holder, holder.begin():
            held = queue.claim(holder, owner="slow", limit=3, lease_seconds=60, max_attempts=3)
            with Session(engine) as other, other.begin():
                # Waiting instead of skipping would hit this and fail the test.
                other.connection().exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                free = queue.claim(other, owner="fast", limit=6, lease_seconds=60, max_attempts=3)
        assert [c.entry_id for c in held] == ids[:3]
        assert [c.entry_id for c in free] == ids[3:]
    finally:
        engine.dispose()


def test_an_expired_lease_is_taken_again_and_the_old_token_is_fenced_off(engine: Engine) -> None:
    [entry] = enqueue(engine, 1)
    [dead] = take(engine, "dead", 5, lease_seconds=30)
    dead = start(engine, dead)
    assert take(engine, "early", 5) == []  # still leased
    later = utcnow() + timedelta(seconds=61)
    [rescue] = take(engine, "rescuer", 5, now=later)
    assert rescue.entry_id == entry
    assert rescue.attempts == 1  # the dead worker's
    assert start(engine, rescue).attempts == 2
    assert rescue.token != dead.token
    with pytest.raises(LeaseLost):
        finish(engine, dead)
    with pytest.raises(LeaseLost), Session(engine) as session, session.begin():
        queue.fail(session, dead, error="late", max_attempts=3)
    finish(engine, rescue)
    assert states(engine) == Counter({QueueState.DONE.value: 1})
    with pytest.raises(LeaseLost):  # done is final, even for the owner
        finish(engine, rescue)


def test_an_entry_whose_worker_keeps_dying_is_failed_not_taken_forever(engine: Engine) -> None:
    enqueue(engine, 1)
    now = utcnow()
    for attempt in range(3):
        now += timedelta(seconds=61)
        [claim] = take(engine, f"crash{attempt}", 1, now=now)
        assert start(engine, claim).attempts == attempt + 1
    assert take(engine, "next", 1, now=now + timedelta(seconds=61)) == []
    assert states(engine) == Counter({QueueState.FAILED.value: 1})


def test_entries_claimed_beside_a_poison_message_lose_nothing_when_it_kills_the_worker(
    engine: Engine,
) -> None:
    """Only the entry being worked on spends an attempt; the rest of its batch waits unspent."""
    poison, *innocent = enqueue(engine, 3)
    now = utcnow()
    for attempt in range(3):
        now += timedelta(seconds=61)
        claims = take(engine, f"crash{attempt}", 3, now=now)
        assert [c.entry_id for c in claims] == [poison, *innocent]
        start(engine, claims[0])  # and the worker dies on it
    now += timedelta(seconds=61)
    claims = take(engine, "next", 3, now=now)
    assert [(c.entry_id, c.attempts) for c in claims] == [(i, 0) for i in innocent]
    with Session(engine) as session:
        assert session.get(QueueEntry, poison).state == QueueState.FAILED  # type: ignore[union-attr]


def test_a_temporary_failure_is_retried_later_without_using_up_attempts(engine: Engine) -> None:
    enqueue(engine, 1)
    [claim] = take(engine, "w", 1)
    claim = start(engine, claim)
    with Session(engine) as session, session.begin():
        state = queue.fail(
            session, claim, error="scanner away", max_attempts=1, temporary=True, retry_after=60
        )
    assert state == QueueState.QUEUED
    assert take(engine, "w", 1) == []  # not due yet
    [again] = take(engine, "w", 1, now=utcnow() + timedelta(seconds=61), max_attempts=1)
    assert again.attempts == 0


@pytest.fixture
def batch_config(make_config: Callable[..., Config]) -> Config:
    return make_config(batch={"size": 10, "lease_seconds": 60})


def test_two_batches_racing_make_exactly_one_ticket_message_per_entry(
    engine: Engine, batch_config: Config
) -> None:
    ids = enqueue(engine, 60)
    results = []
    both_hold_claims = threading.Barrier(2, timeout=60)

    class MeetingBatch(Batch):
        """Keeps its first claim until the other batch holds one too: a race for certain."""

        met = False

        def _claim(self, config: Config) -> list[queue.Claim]:
            claims = super()._claim(config)
            if claims and not self.met:
                self.met = True
                both_hold_claims.wait()
            return claims

    def drain(owner: str) -> None:
        batch = MeetingBatch(engine, file_message, owner=owner)
        results.append(asyncio.run(batch.drain(batch_config)))

    threads = [threading.Thread(target=drain, args=(f"worker-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(r.tickets for r in results)  # both took part
    assert sum(r.tickets for r in results) == 60
    with Session(engine) as session:
        made = Counter(session.scalars(select(col(TicketMessage.queue_entry_id))))
    assert sorted(made) == ids and set(made.values()) == {1}
    assert states(engine) == Counter({QueueState.DONE.value: 60})


def test_a_group_with_one_lost_lease_files_the_others_and_leaves_no_trace_of_it(
    engine: Engine, batch_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """A group's entries are done in one statement that checks every lease token:
    one lease lost rolls the group back, and the rest are filed one by one."""
    ids = enqueue(engine, 3)
    slow = Batch(engine, file_message, owner="slow")
    stale = take(engine, "slow", 3, lease_seconds=30)
    [fresh] = take(engine, "rescuer", 1, now=utcnow() + timedelta(seconds=31))
    assert fresh.entry_id == ids[0]
    raws = slow._raws(stale)
    items = [
        (c, parse_message(raws[c.message_id][0], mail_from=raws[c.message_id][1])) for c in stale
    ]
    settled: dict[int, QueueState | None] = {}
    with caplog.at_level(logging.INFO, logger="mail.batch"):
        slow._file_group(items, batch_config, settled, threading.Event())
    assert [r for r in caplog.records if "one by one" in r.getMessage()]
    assert settled == {ids[0]: None, ids[1]: QueueState.DONE, ids[2]: QueueState.DONE}
    with Session(engine) as session:
        made = sorted(session.scalars(select(col(TicketMessage.queue_entry_id))))
        lost = session.get(QueueEntry, ids[0])
    assert made == ids[1:] and count(engine, Ticket) == 2
    assert lost is not None and lost.lease_owner == "rescuer" and lost.ticket_message_id is None


def test_a_worker_that_lost_its_lease_leaves_no_trace(engine: Engine, batch_config: Config) -> None:
    """The slow worker's ticket rows roll back with its failed finish; the rescuer's stand."""
    [entry] = enqueue(engine, 1)
    slow = Batch(engine, file_message, owner="slow")
    rescuer = Batch(engine, file_message, owner="rescuer")
    [stale] = take(engine, "slow", 1, lease_seconds=30)
    [fresh] = take(engine, "rescuer", 1, now=utcnow() + timedelta(seconds=31))
    raw = slow._raws([stale]).get(stale.message_id)
    assert raw is not None
    parsed = parse_message(raw[0], mail_from=raw[1])

    # LeaseLost: its transaction rolled back
    assert slow._process(stale, batch_config, parsed) is None
    assert count(engine, TicketMessage) == 0
    assert count(engine, Ticket) == 0
    assert rescuer._process(fresh, batch_config, parsed) == QueueState.DONE
    with Session(engine) as session:
        [made] = session.scalars(select(TicketMessage)).all()
        done = session.get(QueueEntry, entry)
    assert made.queue_entry_id == entry
    assert done is not None and done.ticket_message_id == made.id
    assert count(engine, Ticket) == 1
