"""An SMTP load generator on raw asyncio streams.

A client library would spend more CPU than the servers under test on a
2-core machine; speaking the few commands by hand keeps the client cheap, so
the ratio measures the servers.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class LoadResult:
    sent: int
    accepted: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        return (
            f"{self.rate:8.0f} msg/s  p50 {self.percentile(50) * 1000:6.1f} ms  "
            f"p99 {self.percentile(99) * 1000:6.1f} ms  ({self.accepted}/{self.sent} accepted)"
        )


def make_message(index: int, size: int = 4096) -> bytes:
    head = (
        f"From: Customer {index} <customer{index}@example.net>\r\n"
        f"To: support@example.com\r\n"
        f"Subject: Benchmark message {index}\r\n"
        f"Message-ID: <{random.getrandbits(64):016x}.bench-{index}@example.net>\r\n"
        f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line


async def _session(
    host: str,
    port: int,
    count: int,
    offset: int,
    recipient: str,
    result: LoadResult,
    lmtp: bool,
    make: Callable[[int], bytes],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await _reply(reader)
    writer.write(b"LHLO bench\r\n" if lmtp else b"EHLO bench\r\n")
    await _reply(reader)
    for i in range(count):
        message = make(offset + i)
        writer.write(
            b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<" + recipient.encode() + b">\r\nDATA\r\n"
        )
        await _reply(reader)
        await _reply(reader)
        await _reply(reader)
        writer.write(message + b".\r\n")
        started = time.perf_counter()
        reply = await _reply(reader)
        result.sent += 1
        if reply.startswith(b"250"):
            result.latencies.append(time.perf_counter() - started)
            result.accepted += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def run_load(
    host: str,
    port: int,
    *,
    sessions: int = 50,
    per_session: int = 40,
    recipient: str = "support@example.com",
    lmtp: bool = False,
    messages: Callable[[int], bytes] = make_message,
) -> LoadResult:
    result = LoadResult(0, 0, 0.0, [])
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _session(host, port, per_session, s * per_session, recipient, result, lmtp, messages)
            for s in range(sessions)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def median_rate(results: list[LoadResult]) -> float:
    return statistics.median(r.rate for r in results)
