"""Processing: queued mail to tickets, against the standard library's bare parse.

The mixed corpus is the test corpus (``tests/support/corpus``): charsets,
HTML, attachments, attached messages, bounces, auto-replies, malformed
structure. Figures, the parse rates each the best of ``ROUNDS`` so a busy
machine does not decide:

* ``stdlib``: ``email.message_from_bytes`` (policy ``default``) plus decoding
  every leaf part's payload, on one core — the floor any parser on top of it pays;
* ``parse``: :func:`policy.message.mime.parse_message` — charsets, nh3,
  inscriptis, classification — on one core;
* ``examine``: the built-in antivirus scan and the parse of one reading, as
  each process of the batch's pool runs them
  (:func:`ingest.work.reading.examine`), on one core;
* ``batch``: the whole batch on SQLite as ``firstline worker`` runs it
  (scan and parse in a process pool of one process per core, one writer) —
  claim, scan, parse, thread, store ticket messages, attachments and
  Message-IDs, finish — over a backlog of ``FIRSTLINE_BENCH_BACKLOG``
  messages (the corpus over and over, each copy with its own Message-IDs;
  20,000 unless set), and its ratio to ``stdlib``; with its CPU per message
  (the worker and its pool, from /proc), which the load of others moves less;
* ``batch, webhook channel``: the same when the mailbox's channel is a
  webhook, as a helpdesk's is: each ticket message also queues its event
  with the ticket's document;
* ``backlog``: the batch's time per message for backlogs of 1k, 10k and 100k
  messages (``FIRSTLINE_BENCH_SCALE`` scales them down, e.g. ``0.1``), which
  must stay within 1.5x of each other.

The load average before the run is printed with the figures: on a shared
machine, compare the ratios of one run, not runs.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import bench_config, cpu_seconds, workdir
from ingest.work.batch import Batch
from ingest.work.reading import examine, reading_pool
from ingest.work.tickets import file_message
from policy.config.loading import load_config
from policy.config.model import LimitsConfig
from policy.message.mime import parse_message
from storage.bulkinsert import row_of
from storage.engine import make_engine
from storage.intake import GroupCommitWriter, Incoming
from storage.schema import prepare
from tests.support.corpus.cases import CASES
from tests.support.mailflow import stored_message

ROUNDS = 3
COPIES = 20  # the parse rates' corpus: this many copies, each with its own Message-IDs
BACKLOG = int(os.environ.get("FIRSTLINE_BENCH_BACKLOG", "20000"))
SCALE = float(os.environ.get("FIRSTLINE_BENCH_SCALE", "1"))
BACKLOGS = (1_000, 10_000, 100_000)


def _corpus(count: int = COPIES * len(CASES)) -> list[bytes]:
    """``count`` messages: the corpus over and over, each copy with its own Message-IDs."""
    return [
        CASES[n % len(CASES)].raw.replace(
            b"Message-ID: <", b"Message-ID: <%d." % (n // len(CASES)), 1
        )
        for n in range(count)
    ]


def _stdlib(raws: list[bytes]) -> None:
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for part in msg.walk():
            if not part.is_multipart():
                part.get_payload(decode=True)


def _parse(raws: list[bytes]) -> None:
    for raw in raws:
        parse_message(raw)


def _examine(raws: list[bytes]) -> None:
    limits = LimitsConfig()
    for raw in raws:
        examine(raw, None, limits)


def _rate(work: Callable[[list[bytes]], None], raws: list[bytes]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        work(raws)
        best = min(best, time.perf_counter() - started)
    return len(raws) / best


async def _enqueue(engine_url: str, raws: list[bytes]) -> None:
    engine = make_engine(engine_url)
    prepare(engine)
    writer = GroupCommitWriter(engine)
    writer.start()
    try:
        await asyncio.gather(
            *(
                writer.submit(Incoming(row_of(stored_message(raw)), ["support@example.com"]))
                for raw in raws
            )
        )
    finally:
        await writer.close()
        engine.dispose()


@dataclass
class BatchRun:
    rate: float  # messages per second
    cpu: float  # CPU seconds per message: the writer's process and its parsing pool


# What a helpdesk's channel looks like: every ticket message filed also queues
# its event with the ticket's document (delivery is not part of the figure).
WEBHOOK = {
    "name": "helpdesk",
    "type": "webhook",
    "url": "http://127.0.0.1:9/events",
    "secret": "${FIRSTLINE_BENCH_WEBHOOK_SECRET}",
}


def _batch(raws: list[bytes], rounds: int = 1, *, webhook: bool = False) -> BatchRun:
    """The best of ``rounds``, each on a fresh store."""
    best, cpu = float("inf"), 0.0
    os.environ.setdefault("FIRSTLINE_BENCH_WEBHOOK_SECRET", "bench-" + "s" * 32)
    for _ in range(rounds):
        with workdir() as tmp:
            extra = {"channels": [WEBHOOK]} if webhook else {}
            config = load_config(str(bench_config(tmp, 0, 0, **extra)))
            asyncio.run(_enqueue(config.storage.url, raws))
            engine = make_engine(config.storage.url)
            batch = Batch(engine, file_message, executor=reading_pool(), new_executor=reading_pool)
            assert batch.executor is not None
            batch.executor.submit(os.getpid).result()  # the pool is up before the clock
            try:
                cpu_before = cpu_seconds([os.getpid()])
                started = time.perf_counter()
                result = asyncio.run(batch.drain(config))
                elapsed = time.perf_counter() - started
                if elapsed < best:
                    best, cpu = elapsed, (cpu_seconds([os.getpid()]) - cpu_before) / len(raws)
            finally:
                batch.close()
                engine.dispose()
            assert result.taken == len(raws) and result.failed == 0, result
    return BatchRun(len(raws) / best, cpu)


def run() -> list[str]:
    load = os.getloadavg()[0]
    raws = _corpus()
    stdlib = _rate(_stdlib, raws)
    parse = _rate(_parse, raws)
    scan_parse = _rate(_examine, raws)
    backlog = _corpus(BACKLOG)
    run = _batch(backlog)
    batch = run.rate
    hooked = _batch(backlog, webhook=True)
    size = sum(map(len, raws)) / len(raws)
    lines = [
        f"processing: mixed corpus ({len(CASES)} kinds, mean {size / 1024:.1f} KiB), "
        f"load average {load:.2f} before",
        f"  stdlib parse only     {stdlib:9.0f} msg/s  (one core)",
        f"  parse_message         {parse:9.0f} msg/s  ({stdlib / parse:.1f}x the stdlib's time)",
        f"  scan+parse (examine)  {scan_parse:9.0f} msg/s  "
        f"({stdlib / scan_parse:.1f}x the stdlib's time)",
        f"  batch to tickets      {batch:9.0f} msg/s  ({batch / stdlib:.2f} of the stdlib's rate; "
        f"SQLite, backlog of {len(backlog)}, claim..finish)",
        f"  batch CPU             {run.cpu * 1000:9.2f} ms/msg  (the worker and its pool; "
        f"{os.cpu_count()} cores cap the batch at {(os.cpu_count() or 1) / run.cpu:.0f} msg/s)",
        f"  batch, webhook channel{hooked.rate:9.0f} msg/s  ({hooked.rate / stdlib:.2f} of the "
        f"stdlib's rate; {hooked.cpu * 1000:.2f} ms CPU/msg; each message queues its event)",
    ]
    per_message = []
    for count in (max(1, int(n * SCALE)) for n in BACKLOGS):
        per_message.append(1 / _batch(_corpus(count)).rate)
        lines.append(
            f"  backlog {count:>7}       {per_message[-1] * 1000:9.2f} ms/msg  "
            f"({per_message[-1] / per_message[0]:.2f}x the smallest)"
        )
    return lines
