"""Ingest: the durable server against a bare aiosmtpd sink, in the same run.

Each server gets two clients in turn: our load generator (``bench/load.py``,
Python, 50 sessions of 40 messages) and, when it is installed, Postfix's
``smtp-source`` (C, so the client does not eat the server's core;
``-s 20 -m 3000 -l 4096``, one message per session, as issue 17 asks).
firstline runs with ``server.processes`` 1 and 2 on uvloop
(``server.event_loop: auto``), once with one process on asyncio's own loop,
and is measured once ``READY=1`` says every intake process listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator

from bench.harness import (
    Measured,
    bench_config,
    free_port,
    load_average,
    measure,
    process,
    serving,
    settle,
    sink_cmd,
    workdir,
)
from bench.load import LoadResult, run_load
from storage.engine import BENCH_COMMIT_DELAY_ENV

ROUNDS = int(os.environ.get("FIRSTLINE_BENCH_ROUNDS", "3"))
SMTP_SOURCE = shutil.which("smtp-source", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
SOURCE_MESSAGES = 3000
# (name, server.processes, simulated commit delay in ms, server.event_loop); None: the sink
SERVERS: list[tuple[str, int | None, float, str]] = [
    ("sink", None, 0, "asyncio"),
    ("durable, 1 process", 1, 0, "auto"),
    ("durable, 1 process, asyncio", 1, 0, "asyncio"),
    ("durable, 2 processes", 2, 0, "auto"),
    ("durable+5ms, 1 process", 1, 5, "auto"),
    ("durable+5ms, 2 processes", 2, 5, "auto"),
]


def _generator(port: int) -> LoadResult:
    return asyncio.run(run_load("127.0.0.1", port))


def _smtp_source(port: int, source: str) -> LoadResult:
    started = time.perf_counter()
    done = subprocess.run(
        [source, "-s", "20", "-m", str(SOURCE_MESSAGES), "-l", "4096", "-f", "bench@example.net",
         "-t", "support@example.com", f"127.0.0.1:{port}"],
        capture_output=True, timeout=900, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    # smtp-source stops at the first reply that is not the expected one.
    accepted = SOURCE_MESSAGES if done.returncode == 0 else 0
    return LoadResult(SOURCE_MESSAGES, accepted, seconds, [])


@contextlib.contextmanager
def _server(processes: int | None, delay_ms: float, loop: str) -> Iterator[tuple[int, int]]:
    """The SMTP port and pid of the sink (``processes`` None) or of a ready
    ``firstline serve`` on event loop ``loop``, warmed up."""
    port = free_port()
    if processes is None:
        with process(sink_cmd(port), port) as sink:
            asyncio.run(run_load("127.0.0.1", port, sessions=10, per_session=10))
            settle(sink.pid)
            yield port, sink.pid
        return
    with workdir() as tmp:
        config = bench_config(tmp, port, free_port(), processes=processes, event_loop=loop)
        env = {BENCH_COMMIT_DELAY_ENV: str(delay_ms)} if delay_ms else {}
        with serving(tmp, config, port, env) as server:
            asyncio.run(run_load("127.0.0.1", port, sessions=10, per_session=10))
            settle(server.pid)
            yield port, server.pid


def run() -> list[str]:
    clients = ["generator", *(["smtp-source"] if SMTP_SOURCE else [])]
    rows: dict[tuple[str, str], list[Measured]] = {}
    load = load_average()
    for _ in range(ROUNDS):  # interleaved, so drift on the machine hits all alike
        for name, processes, delay, loop in SERVERS:
            with _server(processes, delay, loop) as (port, pid):
                rows.setdefault((name, "generator"), []).append(
                    measure(pid, functools.partial(_generator, port))
                )
                if SMTP_SOURCE:
                    rows.setdefault((name, "smtp-source"), []).append(
                        measure(pid, functools.partial(_smtp_source, port, SMTP_SOURCE))
                    )
    lines = [f"ingest (4 KiB messages, median of {ROUNDS} rounds; load average before: {load})"]
    if not SMTP_SOURCE:
        lines.append("  smtp-source not found (apt-get install postfix): load generator only")
    for client in clients:
        title = (
            "load generator: 50 concurrent sessions x 40 messages"
            if client == "generator"
            else f"smtp-source -s 20 -m {SOURCE_MESSAGES} -l 4096 (one message per session)"
        )
        lines.append(f" {title}")
        sink_rate = statistics.median(m.result.rate for m in rows[("sink", client)])
        for name, *_ in SERVERS:
            measured = sorted(rows[(name, client)], key=lambda m: m.result.rate)
            best = measured[len(measured) // 2].result
            ratio = best.rate / sink_rate if sink_rate else float("nan")
            shown = (
                best.summary()
                if client == "generator"
                else (f"{best.rate:8.0f} msg/s  ({best.accepted}/{best.sent} accepted)")
            )
            cpu = statistics.median(m.cpu for m in measured) * 1e6
            lines.append(f"  {name:<28} {shown}  ratio {ratio:5.2f}  server CPU {cpu:4.0f} us/msg")
    return lines
