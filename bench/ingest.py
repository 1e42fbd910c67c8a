"""Ingest: the durable server against a bare aiosmtpd sink, in the same run."""

from __future__ import annotations

import asyncio
import statistics

from bench.harness import bench_config, firstline_cmd, free_port, process, sink_cmd, workdir
from bench.load import LoadResult, run_load
from storage.engine import BENCH_COMMIT_DELAY_ENV

ROUNDS = 3


def _measure(port: int) -> LoadResult:
    asyncio.run(run_load("127.0.0.1", port, sessions=10, per_session=10))  # warm-up
    return asyncio.run(run_load("127.0.0.1", port))


def _sink() -> LoadResult:
    port = free_port()
    with process(sink_cmd(port), port):
        return _measure(port)


def _firstline(delay_ms: float = 0) -> LoadResult:
    with workdir() as tmp:
        smtp, lmtp = free_port(), free_port()
        config = bench_config(tmp, smtp, lmtp)
        env = {BENCH_COMMIT_DELAY_ENV: str(delay_ms)} if delay_ms else {}
        with process(firstline_cmd("serve", "-c", str(config)), smtp, env):
            return _measure(smtp)


def run() -> list[str]:
    rows: dict[str, list[LoadResult]] = {"sink": [], "durable": [], "durable+5ms": []}
    for _ in range(ROUNDS):  # interleaved, so drift on the machine hits all alike
        rows["sink"].append(_sink())
        rows["durable"].append(_firstline())
        rows["durable+5ms"].append(_firstline(delay_ms=5))
    sink_rate = statistics.median(r.rate for r in rows["sink"])
    lines = ["ingest (50 concurrent SMTP sessions, 4 KiB messages, median of 3 rounds)"]
    for name, results in rows.items():
        best = sorted(results, key=lambda r: r.rate)[len(results) // 2]
        ratio = best.rate / sink_rate if sink_rate else float("nan")
        lines.append(f"  {name:<12} {best.summary()}  ratio {ratio:5.2f}")
    return lines
