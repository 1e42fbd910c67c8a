"""Memory: ``serve``'s RSS is bounded by concurrency, not by traffic.

``SESSIONS`` concurrent SMTP sessions each send one message of ``SIZE``
bytes to a real ``firstline serve`` (durable intake, verification off).
The figure is the resident memory of the server's processes before, at its
peak during the load and a few seconds after, against the bound the issue
sets: sessions x 2 x message size plus the base. The client streams each
message in chunks, so its own memory stays small.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import yaml

from bench.harness import bench_config, firstline_cmd, free_port, process, workdir
from bench.load import make_message

SESSIONS = int(os.environ.get("FIRSTLINE_BENCH_MEMORY_SESSIONS", "200"))
SIZE = 10 * 1024 * 1024
CHUNK = 64 * 1024


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its children (the batch's parsing pool)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if int(status.parent.name) == pid or int(fields.get("PPid", "0")) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return total


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line


async def _session(port: int, body: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench\r\n")
    await _reply(reader)
    writer.write(b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
    for _ in range(3):
        await _reply(reader)
    view = memoryview(body)
    for start in range(0, len(body), CHUNK):
        writer.write(view[start : start + CHUNK])
        await writer.drain()
    writer.write(b".\r\nQUIT\r\n")
    reply = await _reply(reader)
    writer.close()
    return reply.startswith(b"250")


async def _load(port: int, pid: int) -> tuple[int, int, float]:
    body = make_message(0, SIZE)
    peak = 0
    started = time.perf_counter()
    sessions = asyncio.gather(*(_session(port, body) for _ in range(SESSIONS)))
    while not sessions.done():
        peak = max(peak, _rss(pid))
        await asyncio.sleep(0.1)
    accepted = sum(await sessions)
    return accepted, peak, time.perf_counter() - started


def run() -> list[str]:
    with workdir() as tmp:
        smtp, lmtp = free_port(), free_port()
        config = bench_config(tmp, smtp, lmtp)
        # aiosmtpd's one timer is not reset while DATA arrives, and 2 GiB take a
        # while to reach the disk: on a busy two-core machine 200 messages of
        # 10 MiB outlast both the default 300 s and the 60 s commit timeout.
        settings = yaml.safe_load(config.read_text())
        settings["server"]["timeout"] = 3600
        settings["storage"]["commit_timeout"] = 3600
        config.write_text(yaml.safe_dump(settings))
        with process(firstline_cmd("serve", "-c", str(config)), smtp) as proc:
            time.sleep(2)
            base = _rss(proc.pid)
            accepted, peak, seconds = asyncio.run(_load(smtp, proc.pid))
            time.sleep(5)
            after = _rss(proc.pid)
            time.sleep(25)
            later = _rss(proc.pid)
    mib = 1024 * 1024
    bound = SESSIONS * 2 * SIZE + base
    return [
        f"memory: {SESSIONS} concurrent sessions x one {SIZE // mib} MiB message "
        f"({accepted} accepted in {seconds:.0f} s), load average {os.getloadavg()[0]:.2f}",
        f"  serve RSS: base {base / mib:.0f} MiB, peak {peak / mib:.0f} MiB, "
        f"5 s after {after / mib:.0f} MiB, 30 s after {later / mib:.0f} MiB; "
        f"bound {bound / mib:.0f} MiB (peak {peak / bound:.2f} of it; "
        f"after / base {after / base:.2f}, {later / base:.2f})",
    ]
