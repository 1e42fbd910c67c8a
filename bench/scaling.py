"""Scaling: batch time per message as one dimension of a message grows 1x, 10x, 100x.

Work per message must be linear in its input: ten times the header fields
(or addresses, or nesting depth) may cost about ten times as much, never a
hundred. Each row is the whole batch on SQLite (claim, parse, file, finish)
for messages of one shape, reported as time per message and as the ratio to
the 1x shape; the limits are raised so that nothing is refused or cut.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.harness import bench_config, workdir
from bench.processing import _enqueue
from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.loading import load_config
from storage.engine import make_engine

MESSAGES = 5
BASE = 10  # the 1x size of each dimension


def _cc_fields(n: int, copy: int) -> bytes:
    fields = "".join(f"Cc: u{i}@x.example\r\n" for i in range(n))
    return _mail(copy, fields, "text/plain", "hello")


def _addresses(n: int, copy: int) -> bytes:
    to = ",\r\n ".join(f'"User {i}" <u{i}@x.example>' for i in range(n))
    return _mail(copy, f"Cc: {to}\r\n", "text/plain", "hello")


def _html_depth(n: int, copy: int) -> bytes:
    html = "<div>\r\n" * n + "deep text" + "</div>\r\n" * n
    return _mail(copy, "", "text/html", html)


def _mail(copy: int, fields: str, ctype: str, body: str) -> bytes:
    return (
        f"From: a@customer.example\r\nTo: support@example.com\r\nSubject: s\r\n"
        f"Message-ID: <{copy}.{time.monotonic_ns()}@customer.example>\r\n{fields}"
        f"Content-Type: {ctype}\r\n\r\n{body}\r\n"
    ).encode()


def _per_message(raws: list[bytes]) -> float:
    with workdir() as tmp:
        limits = {"max_addresses": 10**6, "max_html_depth": 200}
        config = load_config(str(bench_config(tmp, 0, 0, limits=limits)))
        asyncio.run(_enqueue(config.storage.url, raws))
        engine = make_engine(config.storage.url)
        try:
            started = time.perf_counter()
            result = asyncio.run(Batch(engine, file_message).drain(config))
            elapsed = time.perf_counter() - started
        finally:
            engine.dispose()
    assert result.tickets == len(raws), result
    return elapsed / len(raws)


def run() -> list[str]:
    shapes: list[tuple[str, Callable[[int, int], bytes]]] = [
        ("Cc header fields", _cc_fields),
        ("addresses in one Cc", _addresses),
        ("HTML nesting depth", _html_depth),
    ]
    lines = [
        f"scaling: batch time per message, {MESSAGES} messages per size (SQLite); "
        "linear growth is a ratio of at most 10 and 100"
    ]
    for name, make in shapes:
        times = [
            _per_message([make(BASE * factor, copy) for copy in range(MESSAGES)])
            for factor in (1, 10, 100)
        ]
        lines.append(
            f"  {name:22} {BASE:>5}: {times[0] * 1000:7.1f} ms  "
            f"x10: {times[1] / times[0]:5.1f}  x100: {times[2] / times[0]:6.1f}"
        )
    return lines
