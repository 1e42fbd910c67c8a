"""Crash safety, proven with real processes and SIGKILL.

Listeners and workers run as ``firstline`` processes on one database while a
client sends mail over SMTP and LMTP and a chaos thread SIGKILLs workers —
preferring one that holds leases right now — and restarts them. Afterwards:
every message that got a ``250`` is exactly one ticket message; no message
that got a 4xx/5xx is stored or ticketed.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.outbound.replies import queue_reply
from policy.config.loading import load_config
from storage.engine import make_engine
from storage.lease import table_of
from storage.models import (
    QueueEntry,
    QueueState,
    Reply,
    ReplyState,
    StoredMessage,
    Ticket,
    TicketMessage,
)
from storage.schema import prepare
from tests.support.dnsserver import DnsServer
from tests.support.fleet import FIRSTLINE, Fleet, Mail, Node, deliver, mail, running, write_config
from tests.support.relay import PASSWORD, USER, Relays

pytestmark = pytest.mark.slow


def settings(dns: DnsServer) -> dict[str, Any]:
    return {
        # Short leases so a killed worker's entries come back within seconds;
        # attempts high enough that repeated kills never fail an innocent message.
        "batch": {"interval": 0.2, "size": 25, "lease_seconds": 2, "max_attempts": 100},
        "server": {"max_message_size": 16384},
        "dns": {"nameservers": [dns.address], "timeout": 2},
        "logging": {"level": "WARNING"},
    }


def workload(count: int, rng: random.Random) -> list[Mail]:
    """Mostly good mail, some for an unknown mailbox (550), some too big (552)."""
    mails = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.04:
            mails.append(mail(n, rcpt="nobody@example.com"))
        elif roll < 0.08:
            mails.append(mail(n, padding=20000))
        else:
            mails.append(mail(n))
    return mails


def send_all(fleet: Fleet, mails: Sequence[Mail], clients: int = 4) -> dict[str, int]:
    routes = [(ln.smtp, "SMTP") for ln in fleet.listeners] + [
        (ln.lmtp, "LMTP") for ln in fleet.listeners
    ]
    chunks = [mails[i : i + 25] for i in range(0, len(mails), 25)]
    codes: dict[str, int] = {}
    with ThreadPoolExecutor(clients) as pool:
        jobs = [
            pool.submit(deliver, *routes[n % len(routes)], chunk) for n, chunk in enumerate(chunks)
        ]
        for job in jobs:
            codes.update(job.result())
    return codes


@dataclass(frozen=True)
class Work:
    """A leased work table: inbound queue entries or outbound replies."""

    table: Table
    leased: str
    open_states: tuple[str, ...]


INBOUND = Work(table_of(QueueEntry), QueueState.LEASED, (QueueState.QUEUED, QueueState.LEASED))
REPLIES = Work(
    table_of(Reply),
    ReplyState.SENDING,
    (ReplyState.QUEUED, ReplyState.SENDING, ReplyState.RETRYING),
)


class Chaos(threading.Thread):
    """SIGKILL workers at random moments, mostly ones holding leases, and restart them."""

    def __init__(
        self, workers: list[Node], engine: Engine, rng: random.Random, max_kills: int, work: Work
    ) -> None:
        super().__init__(daemon=True)
        self.workers, self.engine, self.rng, self.max_kills = workers, engine, rng, max_kills
        self.work = work
        self.halt = threading.Event()
        self.kills = 0
        self.lease_holder_kills = 0

    def _lease_holders(self) -> list[Node]:
        table = self.work.table
        with self.engine.connect() as connection:
            owners = set(
                connection.scalars(
                    select(table.c.lease_owner).where(table.c.state == self.work.leased)
                )
            )
        pids = {int(owner.split(":")[1]) for owner in owners if owner}
        return [w for w in self.workers if w.process is not None and w.process.pid in pids]

    def run(self) -> None:
        other_kills = 0
        while self.lease_holder_kills < self.max_kills and not self.halt.wait(
            self.rng.uniform(0.1, 1)
        ):
            if holders := self._lease_holders():
                victim = self.rng.choice(holders)
                self.lease_holder_kills += 1
            elif other_kills < 2 and self.rng.random() < 0.1:
                victim = self.rng.choice(self.workers)  # starting up, or idle
                other_kills += 1
            else:
                continue
            victim.kill()
            self.kills += 1
            time.sleep(self.rng.uniform(0, 0.3))
            victim.start()


def settle(
    engine: Engine, fleet: Fleet, expected: int, work: Work = INBOUND, timeout: float = 300
) -> None:
    """Wait until every row has reached a final state (bounded; reports on failure)."""
    deadline = time.monotonic() + timeout
    table = work.table
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            rows = connection.scalar(select(func.count()).select_from(table)) or 0
            pending = connection.scalar(
                select(func.count()).select_from(table).where(table.c.state.in_(work.open_states))
            )
        if rows >= expected and not pending:
            return
        time.sleep(0.2)
    pytest.fail(f"{table.name} did not drain: {rows} rows, {pending} open\n{fleet.report()}")


def check_outcome(engine: Engine, codes: dict[str, int]) -> Counter[int]:
    accepted = {mid for mid, code in codes.items() if code == 250}
    refused = {mid for mid, code in codes.items() if code >= 400}
    assert not {mid for mid, code in codes.items() if code == 0}, "a listener dropped a session"
    with Session(engine) as session:
        made = Counter(
            m.strip("<>") for m in session.scalars(select(col(TicketMessage.message_id)))
        )
        stored = session.scalar(select(func.count()).select_from(StoredMessage))
        final = Counter(str(s) for s in session.scalars(select(col(QueueEntry.state))))
        rescued = session.scalar(
            select(func.count()).select_from(QueueEntry).where(col(QueueEntry.attempts) > 1)
        )
    doubled = {mid: n for mid, n in made.items() if n != 1}
    assert doubled == {}, "a message became more than one ticket message"
    assert set(made) == accepted, (
        f"lost: {sorted(accepted - set(made))[:5]}, unexpected: {sorted(set(made) - accepted)[:5]}"
    )
    assert not refused & set(made)
    assert stored == len(accepted)
    assert final == Counter({QueueState.DONE.value: len(accepted)})
    assert rescued, "no kill ever interrupted a lease: the test proved nothing"
    return Counter(codes.values())


@pytest.fixture
def seed() -> int:
    value = random.SystemRandom().randrange(2**32)
    print(f"chaos seed {value}")  # reproduce a failure with this seed
    return value


def crash_run(
    tmp_path: Path, db_url: str, dns: DnsServer, *, listeners: int, workers: int, count: int,
    kills: int, seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    fleet = Fleet(tmp_path, db_url, settings(dns))
    for _ in range(listeners):
        fleet.add_listener()
    for _ in range(workers):
        fleet.add_worker()
    engine = make_engine(db_url)
    mails = workload(count, rng)
    try:
        with running(fleet, workers=False):
            # A backlog first, so that workers are always mid-batch when killed.
            codes = send_all(fleet, mails[: count // 2])
            for worker in fleet.workers:
                worker.start()
            chaos = Chaos(fleet.workers, engine, rng, kills, INBOUND)
            chaos.start()
            try:
                codes.update(send_all(fleet, mails[count // 2 :]))
                accepted = sum(1 for code in codes.values() if code == 250)
                settle(engine, fleet, accepted)  # killing all along, until the queue drains
            finally:
                chaos.halt.set()
                chaos.join(30)
            for worker in fleet.workers:
                assert worker.alive, worker.tail()
            settle(engine, fleet, accepted)
        replies = check_outcome(engine, codes)
        assert set(replies) == {250, 550, 552}, replies
        assert chaos.lease_holder_kills >= 1
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/firstline.db"


def test_sqlite_one_listener_one_worker_killed_at_random(
    tmp_path: Path, sqlite_url: str, dns_server: DnsServer, seed: int
) -> None:
    crash_run(
        tmp_path, sqlite_url, dns_server, listeners=1, workers=1, count=600, kills=5, seed=seed
    )


@pytest.mark.postgres
def test_postgres_two_listeners_three_workers_killed_at_random(
    tmp_path: Path, postgres_schema_url: str, dns_server: DnsServer, seed: int
) -> None:
    crash_run(
        tmp_path, postgres_schema_url, dns_server,
        listeners=2, workers=3, count=2000, kills=8, seed=seed,
    )  # fmt: skip


def queue_replies(engine: Engine, config_path: Path, count: int) -> None:
    """One ticket per customer and a reply to each, composed and queued as an agent would."""
    config = load_config(config_path)
    with Session(engine) as session, session.begin():
        for n in range(count):
            ticket = Ticket(
                mailbox="support@example.com", subject=f"Question {n}",
                requester=f"c{n}@customer.example",
            )  # fmt: skip
            session.add(ticket)
            session.flush()
            assert ticket.id is not None
            queue_reply(session, config, ticket.id, text=f"Answer {n}")


@pytest.mark.postgres
def test_postgres_replies_sent_by_workers_killed_at_random(
    tmp_path: Path, postgres_schema_url: str, dns_server: DnsServer, relays: Relays, seed: int
) -> None:
    """Every reply reaches the relay; one reaches it twice only if its sender died mid-send.

    Between the relay's ``250`` and the commit that records it, a SIGKILL
    leaves the reply ``sending``: after its lease it is sent again, with the
    same Message-ID (SMTP has no way to ask the relay whether it already took
    it). Two live workers never send the same reply: a duplicate whose reply
    was only ever claimed once would fail this test.
    """
    rng = random.Random(seed)
    port, relay = relays.start("starttls")
    smtp = {
        "host": "127.0.0.1", "port": port, "account": USER, "password": PASSWORD,
        "encryption": "starttls", "ca_file": str(relays.ca_file), "timeout": 10,
    }  # fmt: skip
    changes = {
        "mailboxes": [{"channel": "helpdesk", "name": "Example Support",
                       "address": "support@example.com", "smtp": smtp}],
        "outbox": {"interval": 0.2, "lease_seconds": 3, "max_attempts": 100,
                   "retry_seconds": 0.5},
    }  # fmt: skip
    # A claim's replies go out one after another under one lease: keep claims small
    # enough to finish well within it, so only a kill lets a lease run out.
    batch = {**settings(dns_server)["batch"], "size": 3}
    fleet = Fleet(
        tmp_path, postgres_schema_url, {**settings(dns_server), **changes, "batch": batch}
    )
    for _ in range(3):
        fleet.add_worker()
    engine = make_engine(postgres_schema_url)
    count = 150
    try:
        prepare(engine)
        queue_replies(
            engine, write_config(tmp_path / "agent.yaml", postgres_schema_url, **changes), count
        )
        with running(fleet):
            chaos = Chaos(fleet.workers, engine, rng, 5, REPLIES)
            chaos.start()
            try:
                settle(engine, fleet, count, REPLIES)
            finally:
                chaos.halt.set()
                chaos.join(30)
            settle(engine, fleet, count, REPLIES)
        with Session(engine) as session:
            replies = {r.message_id: r for r in session.scalars(select(Reply))}
    finally:
        engine.dispose()
    delivered = Counter(
        str(message_from_bytes(item.data)["Message-ID"]) for item in list(relay.received)
    )
    assert set(delivered) == set(replies)  # every reply went out, nothing else did
    assert {r.state for r in replies.values()} == {ReplyState.SENT}
    twice = {mid: n for mid, n in delivered.items() if n > 1}
    assert all(replies[mid].attempts > 1 for mid in twice), twice
    assert any(r.attempts > 1 for r in replies.values()), "no kill interrupted a send"
    assert chaos.lease_holder_kills >= 1
    print(f"{len(twice)} of {count} replies delivered twice after {chaos.kills} kills")


def slow_to_parse(n: int) -> Mail:
    """A message that takes the batch seconds: half a megabyte of ordinary HTML."""
    message_id = f"slow.{n}@customer.example"
    html = "<p>\r\n" + '<span style="color:red">word</span>\r\n' * 15_000 + "</p>\r\n"
    raw = (
        f"From: a@customer.example\r\nTo: support@example.com\r\nSubject: slow\r\n"
        f"Message-ID: <{message_id}>\r\nContent-Type: text/html\r\n\r\n{html}"
    ).encode()
    return Mail(message_id, "support@example.com", raw, "a@customer.example")


def wait_until(what: Callable[[], bool], fleet: Fleet, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out\n{fleet.report()}")
        time.sleep(0.02)


def entries(engine: Engine) -> dict[int, QueueEntry]:
    with Session(engine) as session:
        return {e.id: e for e in session.scalars(select(QueueEntry)) if e.id is not None}


def test_a_message_slow_to_parse_spends_only_its_own_attempts_when_its_worker_dies(
    tmp_path: Path, sqlite_url: str, dns_server: DnsServer
) -> None:
    """Kill the worker while it parses a slow message, then stop it gracefully there.

    The entries claimed with it spend nothing either time (with two attempts
    allowed, the old accounting failed them), a graceful stop gives them back
    due at once (``firstline process`` takes them), and every ``250`` is
    exactly one ticket message.
    """
    big = 4 * 1024 * 1024
    fleet = Fleet(tmp_path, sqlite_url, {
        **settings(dns_server),
        "batch": {"interval": 0.2, "size": 25, "lease_seconds": 5, "max_attempts": 2},
        "server": {"max_message_size": big},
    })  # fmt: skip
    fleet.add_listener()
    worker = fleet.add_worker()
    engine = make_engine(sqlite_url)
    mails = [slow_to_parse(0), *(mail(n) for n in range(1, 11))]
    try:
        with running(fleet, workers=False):
            codes = deliver(fleet.listeners[0].smtp, "SMTP", mails)
            assert set(codes.values()) == {250}
            slow = min(entries(engine))

            def slow_started(attempts: int) -> Callable[[], bool]:
                def check() -> bool:
                    entry = entries(engine)[slow]
                    return entry.state == QueueState.LEASED and entry.attempts == attempts

                return check

            worker.start()
            wait_until(slow_started(1), fleet)
            worker.kill()
            others = [e for i, e in entries(engine).items() if i != slow]
            assert {e.attempts for e in others} == {0}
            worker.start()  # takes them all again once the dead worker's lease runs out
            wait_until(slow_started(2), fleet)
            worker.stop()
            rest = [e for e in entries(engine).values() if e.state != QueueState.DONE]
            assert rest and all(e.state == QueueState.QUEUED for e in rest), fleet.report()
            now = datetime.now(UTC).replace(tzinfo=None)
            assert all(e.available_at <= now for e in rest)
            # Starting the slow entry renewed its lease, so after the kill the others'
            # leases ran out first and the new worker may have filed them before it
            # took the slow one again: whatever is left spent nothing.
            assert {e.attempts for e in rest if e.id != slow} <= {0}
            done = subprocess.run(
                [*FIRSTLINE, "process", "-c", str(tmp_path / "worker1.yaml")],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        with Session(engine) as session:
            made = Counter(
                m.strip("<>") for m in session.scalars(select(col(TicketMessage.message_id)))
            )
        assert made == Counter({m.message_id: 1 for m in mails})
        assert {e.state for e in entries(engine).values()} == {QueueState.DONE}
    finally:
        engine.dispose()
