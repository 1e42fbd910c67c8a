"""PostgreSQL: listeners and workers as separate processes, against SQLite's single process.

Two figures, each as a ratio to the same figure measured on SQLite in this run:

* ingest: ``firstline serve --no-worker`` processes, one and two, on one
  PostgreSQL, under the load generator's 50 concurrent SMTP sessions (split
  evenly between the listeners);
* batch: ``firstline worker`` processes, one to three, draining the same
  backlog — the clock runs from the commit that queues the backlog until the
  last entry is done.

Every process is real and every commit durable. The database is the one the
tests use (``FIRSTLINE_TEST_POSTGRES_URL``), in a schema of its own that is
dropped afterwards. DNS answers come from a loopback server that knows no
names, identically for both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from bench.harness import cpu_seconds, workdir
from bench.load import LoadResult, make_message, run_load
from storage.engine import make_engine
from storage.models import QueueEntry, QueueState, StoredMessage
from storage.schema import prepare
from tests.support.dnsserver import DnsServer
from tests.support.fleet import Fleet, running
from tests.support.stores import postgres_url

ROUNDS = 3
# Several of batch.size (500) per worker, so that three workers each run more
# than one batch and the start of a batch is not most of the figure.
BACKLOG = int(os.environ.get("FIRSTLINE_BENCH_PG_BACKLOG", "6000"))
SESSIONS = 50
PER_SESSION = 40


@contextmanager
def _postgres_schema() -> Iterator[str]:
    url = postgres_url()
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _settings(dns: DnsServer) -> dict[str, Any]:
    # The batch's own size (500, several groups, the next read while one is
    # filed), as a worker runs it: with 50 a batch was one group, never overlapped.
    return {
        "server": {"max_connections": 1000, "max_connections_per_ip": 1000},
        "batch": {"interval": 0.05},
        "dns": {"nameservers": [dns.address], "timeout": 2},
        "logging": {"level": "WARNING"},
    }


def _ingest(tmp: Path, url: str, dns: DnsServer, listeners: int) -> LoadResult:
    fleet = Fleet(tmp, url, _settings(dns))
    for _ in range(listeners):
        fleet.add_listener()
    with running(fleet):
        asyncio.run(run_load(*fleet.listeners[0].smtp, sessions=10, per_session=10))  # warm-up
        return asyncio.run(_load_all(fleet))


async def _load_all(fleet: Fleet) -> LoadResult:
    share = SESSIONS // len(fleet.listeners)
    started = time.perf_counter()
    parts = await asyncio.gather(
        *(run_load(*ln.smtp, sessions=share, per_session=PER_SESSION) for ln in fleet.listeners)
    )
    seconds = time.perf_counter() - started
    return LoadResult(
        sent=sum(p.sent for p in parts),
        accepted=sum(p.accepted for p in parts),
        seconds=seconds,
        latencies=[latency for p in parts for latency in p.latencies],
    )


def _queue_backlog(engine: Engine, count: int) -> None:
    """The whole backlog in one transaction, so every worker sees all of it at once."""
    with Session(engine) as session, session.begin():
        for n in range(count):
            raw = make_message(n)
            digest = hashlib.sha256(raw).hexdigest()
            message = StoredMessage(
                trace_id=f"B{n:08d}", digest=digest, size=len(raw), raw=raw, proto="ESMTP",
                client_ip="127.0.0.1", mail_from=f"customer{n}@example.net",
                rcpt_tos=["support@example.com"],
            )  # fmt: skip
            session.add(message)
            session.flush()
            assert message.id is not None
            session.add(QueueEntry(message_id=message.id, mailbox="support@example.com",
                                   digest=digest))  # fmt: skip


def _done(engine: Engine) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(QueueEntry)
                .where(col(QueueEntry.state) == QueueState.DONE)
            )
            or 0
        )


@dataclass
class BatchRun:
    rate: float
    worker_cpu: float  # CPU seconds per message, in the worker processes
    database_cpu: float  # CPU seconds per message, in PostgreSQL's processes


def _postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
    return pids


def _batch(tmp: Path, url: str, dns: DnsServer, workers: int) -> BatchRun:
    """Queued to done with ``workers`` worker processes, and what it cost in CPU."""
    fleet = Fleet(tmp, url, _settings(dns))
    for _ in range(workers):
        fleet.add_worker()
    engine = make_engine(url)
    try:
        prepare(engine)
        with running(fleet):
            time.sleep(3)  # the workers are up and polling an empty queue
            worker_pids = [n.process.pid for n in fleet.workers if n.process is not None]
            _queue_backlog(engine, BACKLOG)
            # From its commit: the clock and the CPU figures leave out queueing the
            # backlog (about 12 s for 6,000 on PostgreSQL, half of what one worker
            # took to file them), which no number of workers can shorten.
            database_pids = _postgres_pids()
            cpu_before = cpu_seconds(worker_pids), cpu_seconds(database_pids)
            started = time.perf_counter()
            while _done(engine) < BACKLOG:
                if not all(node.alive for node in fleet.workers):
                    raise RuntimeError(fleet.report())
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            database_pids = sorted(set(database_pids) | set(_postgres_pids()))
            return BatchRun(
                rate=BACKLOG / seconds,
                worker_cpu=(cpu_seconds(worker_pids) - cpu_before[0]) / BACKLOG,
                database_cpu=(cpu_seconds(database_pids) - cpu_before[1]) / BACKLOG,
            )
    finally:
        engine.dispose()


def _sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp}/bench.db"


def run() -> list[str]:
    try:
        with _postgres_schema():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        return [f"postgres: skipped, {postgres_url()} is not reachable ({exc.__class__.__name__})"]
    ingest: dict[str, list[LoadResult]] = {"sqlite": [], "pg1": [], "pg2": []}
    batch: dict[str, list[BatchRun]] = {"sqlite": [], "pg1": [], "pg2": [], "pg3": []}
    with DnsServer() as dns:
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits all alike
            with workdir() as tmp:
                ingest["sqlite"].append(_ingest(tmp, _sqlite_url(tmp), dns, 1))
                batch["sqlite"].append(_batch(tmp, _sqlite_url(tmp), dns, 1))
            for n in (1, 2):
                with workdir() as tmp, _postgres_schema() as url:
                    ingest[f"pg{n}"].append(_ingest(tmp, url, dns, n))
            for n in (1, 2, 3):
                with workdir() as tmp, _postgres_schema() as url:
                    batch[f"pg{n}"].append(_batch(tmp, url, dns, n))
    return _report(ingest, batch)


def _report(ingest: dict[str, list[LoadResult]], batch: dict[str, list[BatchRun]]) -> list[str]:
    lines = [
        f"postgres vs SQLite: separate processes, median of {ROUNDS} rounds, ratios to "
        f"SQLite's single process ({SESSIONS} SMTP sessions x {PER_SESSION} messages of 4 KiB; "
        f"a batch backlog of {BACKLOG})"
    ]
    labels = {"sqlite": "sqlite  1", "pg1": "pg      1", "pg2": "pg      2", "pg3": "pg      3"}
    ingest_median = {k: sorted(v, key=lambda r: r.rate)[len(v) // 2] for k, v in ingest.items()}
    for key, result in ingest_median.items():
        ratio = result.rate / ingest_median["sqlite"].rate
        lines.append(f"  ingest {labels[key]} listener(s) {result.summary()}  ratio {ratio:5.2f}")
    rates = {k: statistics.median([r.rate for r in v]) for k, v in batch.items()}
    for key, rate in rates.items():
        versus_one = f"  {rate / rates['pg1']:.2f}x one pg worker" if key in ("pg2", "pg3") else ""
        lines.append(
            f"  batch  {labels[key]} worker(s)   {rate:8.0f} msg/s  "
            f"ratio {rate / rates['sqlite']:5.2f}{versus_one}"
        )
    worker_cpu = statistics.median([r.worker_cpu for r in batch["pg1"]])
    database_cpu = statistics.median([r.database_cpu for r in batch["pg1"]])
    ceiling = (os.cpu_count() or 1) / (worker_cpu + database_cpu)
    lines.append(
        f"  batch  pg CPU per message: worker {worker_cpu * 1000:.1f} ms, PostgreSQL "
        f"{database_cpu * 1000:.1f} ms; {os.cpu_count()} cores cap any number of workers at "
        f"{ceiling:.0f} msg/s ({ceiling / rates['pg1']:.2f}x one pg worker)"
    )
    return lines


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
