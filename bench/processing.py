"""Processing: queued mail to tickets, against the standard library's bare parse.

The mixed corpus is the test corpus (``tests/corpus``): charsets, HTML,
attachments, attached messages, bounces, auto-replies, malformed structure.
Three figures, each the best of ``ROUNDS`` so a busy machine does not decide:

* ``stdlib``: ``email.message_from_bytes`` (policy ``default``) plus decoding
  every leaf part's payload — the floor any parser on top of it pays;
* ``parse``: :func:`policy.message.mime.parse_message` — charsets, nh3, inscriptis,
  classification;
* ``batch``: the whole batch on SQLite — claim, parse, thread, store ticket
  messages, attachments and Message-IDs, finish — messages per second.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable

from bench.harness import bench_config, workdir
from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.loading import load_config
from policy.message.mime import parse_message
from storage.engine import make_engine
from storage.intake import GroupCommitWriter, Incoming, row_of
from storage.schema import prepare
from tests.support.corpus.cases import CASES
from tests.support.mailflow import stored_message

ROUNDS = 3
COPIES = 20  # the corpus this many times over, each copy with its own Message-IDs


def _corpus() -> list[bytes]:
    return [
        case.raw.replace(b"Message-ID: <", b"Message-ID: <%d." % copy, 1)
        for copy in range(COPIES)
        for case in CASES
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


def _batch(raws: list[bytes]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        with workdir() as tmp:
            config = load_config(str(bench_config(tmp, 0, 0)))
            asyncio.run(_enqueue(config.storage.url, raws))
            engine = make_engine(config.storage.url)
            try:
                started = time.perf_counter()
                result = asyncio.run(Batch(engine, file_message).drain(config))
                best = min(best, time.perf_counter() - started)
            finally:
                engine.dispose()
            assert result.taken == len(raws) and result.failed == 0, result
    return len(raws) / best


def run() -> list[str]:
    raws = _corpus()
    stdlib = _rate(_stdlib, raws)
    parse = _rate(_parse, raws)
    batch = _batch(raws)
    size = sum(map(len, raws)) / len(raws)
    return [
        f"processing: mixed corpus of {len(raws)} messages ({len(CASES)} kinds, "
        f"mean {size / 1024:.1f} KiB)",
        f"  stdlib parse only     {stdlib:9.0f} msg/s",
        f"  parse_message         {parse:9.0f} msg/s  ({stdlib / parse:.1f}x the stdlib's time)",
        f"  batch to tickets      {batch:9.0f} msg/s  (SQLite, claim..finish, incl. storage)",
    ]
