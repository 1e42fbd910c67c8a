"""Intake holds one copy of a message: DATA read into one buffer, our trace headers
joined only when the row is written, large batches written in bounded statements.

Memory itself is a bench figure (``python -m bench memory``); these tests hold
the bytes: what is stored is exactly what the client sent, unstuffed, after our
own headers, however the client cut it into segments and however many large
messages share one commit.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import platform
import re
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from ingest.smtp.dataread import Overrun, read_data
from policy.message.headers import summarize
from policy.verify.verdict import ACCEPT, Envelope
from storage.engine import make_engine
from storage.intake import GroupCommitWriter, Incoming
from storage.models import QueueEntry, StoredMessage
from storage.schema import prepare
from tests.support.server import ServerThread
from tests.support.stores import SQLITE_ONLY

HEAD = (
    b"From: Alice <alice@customer.example>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: dots and segments\r\n"
    b"Message-ID: <segments-1@customer.example>\r\n"
    b"\r\n"
)
# As sent: transparency dots on lines that start with a dot, a bare LF and a
# bare CR inside lines (kept verbatim), a NUL, a long line.
BODY = (
    b"..leading dot\r\n"
    b"...two\r\n"
    b".\tdot tab\r\n"
    b"bare\nLF and bare\rCR\r\n"
    b"nul\x00byte\r\n" + b"z" * 70_000 + b"\r\n" + b"the end\r\n"
)
UNSTUFFED = HEAD + BODY.replace(b"\r\n.", b"\r\n").replace(b"..leading", b".leading", 1)


def _reader(limit: int = 2**16) -> asyncio.StreamReader:
    return asyncio.StreamReader(limit=limit)


async def _read_fed(pieces: list[bytes], *, size_limit: int | None, limit: int) -> tuple[
    bytes | Overrun, bytes
]:  # fmt: skip
    """``read_data`` over a real stream fed ``pieces`` one at a time, each only
    once the reader waits for more; also returns what it left unread."""
    reader = _reader(limit)
    task = asyncio.create_task(read_data(reader, size_limit, limit + 3))
    for piece in pieces:
        for _ in range(5):
            await asyncio.sleep(0)
        reader.feed_data(piece)
    reader.feed_eof()
    result = await task
    return result, await reader.read()


def test_read_data_unstuffs_dots_across_any_segmentation() -> None:
    wire = HEAD + BODY + b".\r\nQUIT\r\n"
    # One octet at a time across the header and the dot lines, then the rest.
    pieces = [wire[i : i + 1] for i in range(len(HEAD) + 40)] + [wire[len(HEAD) + 40 :]]
    result, left = asyncio.run(_read_fed(pieces, size_limit=None, limit=2**17))
    assert result == UNSTUFFED
    assert left == b"QUIT\r\n"


def test_a_dot_line_inside_an_overlong_line_is_not_the_end_of_data() -> None:
    # The stream's limit is 16: the first 17 octets are read as a fragment and
    # the ".\r\n" that follows closes that line, not the message.
    pieces = [b"y" * 17 + b".", b"\r\n", b".\r\nNEXT\r\n"]
    result, left = asyncio.run(_read_fed(pieces, size_limit=None, limit=16))
    assert result is Overrun.TOO_LONG
    assert left == b"NEXT\r\n"


def test_too_much_data_is_read_to_the_end_and_then_refused() -> None:
    pieces = [b"line of text\r\n" * 10, b".\r\nNEXT\r\n"]
    result, left = asyncio.run(_read_fed(pieces, size_limit=100, limit=2**16))
    assert result is Overrun.TOO_MUCH
    assert left == b"NEXT\r\n"


@SQLITE_ONLY
def test_stored_bytes_are_our_headers_then_exactly_the_received_bytes(
    server: ServerThread,
) -> None:
    with socket.create_connection(server.smtp_address) as sock:
        sock.settimeout(10)
        stream = sock.makefile("rb")
        stream.readline()
        sock.sendall(b"EHLO relay.test\r\nMAIL FROM:<alice@customer.example>\r\n"
                     b"RCPT TO:<support@example.com>\r\nDATA\r\n")  # fmt: skip
        while not stream.readline().startswith(b"354"):
            pass
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HEAD)
        for start in range(0, 294, 7):  # small segments across the dot lines
            sock.sendall(BODY[start : start + 7])
        sock.sendall(BODY[294:] + b".\r\n")
        reply = stream.readline()
        sock.sendall(b"QUIT\r\n")
    assert reply.startswith(b"250 2.0.0 ")
    with Session(server.engine) as session:
        [message] = session.scalars(select(StoredMessage)).all()
        [entry] = session.scalars(select(QueueEntry)).all()
    assert message.raw is not None
    prefix = message.raw[: len(message.raw) - len(UNSTUFFED)]
    assert message.raw[len(prefix) :] == UNSTUFFED
    assert re.fullmatch(rb"Received: from relay\.test [^\r\n]*\r\n(\t[^\r\n]*\r\n)+", prefix)
    assert message.size == len(message.raw)
    assert message.digest == entry.digest == hashlib.sha256(UNSTUFFED).hexdigest()


def _incoming(index: int, size: int) -> Incoming:
    body = HEAD.replace(b"segments-1", f"big-{index}".encode()) + bytes([65 + index % 26]) * size
    envelope = Envelope("192.0.2.1", None, "relay.test", "alice@customer.example",
                        ("support@example.com",))  # fmt: skip
    return Incoming.accepted(
        body, prefix=f"X-Trace: {index}\r\n".encode(), as_sent=body, trace_id=f"T{index}",
        envelope=envelope, headers=summarize(body), verdict=ACCEPT,
        mailboxes=["support@example.com"],
    )  # fmt: skip


def test_large_messages_are_committed_in_batches_of_bounded_size(db_url: str) -> None:
    engine = make_engine(db_url)
    prepare(engine)
    # With a bound of 1 MB: 300k + 10 | 700k | 1.5M alone | 20 + 400k + 400k + 5.
    sizes = [300_000, 10, 700_000, 1_500_000, 20, 400_000, 400_000, 5]
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))

    async def commit_all() -> list[Incoming]:
        writer = GroupCommitWriter(engine, max_batch_bytes=1_000_000)
        writer.start()
        # Submitted before the writer runs: all pending at its first wake-up.
        items = await asyncio.gather(*(writer.submit(_incoming(i, n)) for i, n in enumerate(sizes)))
        await writer.close()
        return [item for item in items if isinstance(item, Incoming)]

    items = asyncio.run(commit_all())
    assert len(commits) == 4
    with Session(engine) as session:
        stored = {m.id: m for m in session.scalars(select(StoredMessage))}
        entries = {e.id: e for e in session.scalars(select(QueueEntry))}
    engine.dispose()
    assert len(stored) == len(entries) == len(items) == len(sizes)
    for index, (item, size) in enumerate(zip(items, sizes, strict=True)):
        message = stored[item.message_id or 0]
        assert message.trace_id == f"T{index}"
        assert (
            message.raw == f"X-Trace: {index}\r\n".encode() + _incoming(index, size).message["raw"]
        )
        assert message.size == len(message.raw)
        [entry_id] = item.queue_ids
        assert entries[entry_id].message_id == message.id
        assert entries[entry_id].digest == message.digest


_MAPPED_AFTER_A_LARGER_FREE = """
import ctypes, sys

from ingest.ops import allocator


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "mapped":
    allocator.map_large_blocks()
libc.free(libc.malloc(16 * 1024 * 1024))
before = libc.mallinfo2().hblkhd  # octets in blocks with mappings of their own
block = libc.malloc(4 * 1024 * 1024)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
@pytest.mark.parametrize("mode", ["mapped", "glibc default"])
def test_large_blocks_get_mappings_of_their_own_after_a_larger_one_was_freed(mode: str) -> None:
    """By default, freeing a 16 MiB block raises glibc's threshold to 16 MiB, and
    the 4 MiB block after it comes from the heap, which is not given back.

    In a fresh process, as at serve's start: in a long-lived one (this test
    session) a free heap chunk big enough serves the block whatever the
    threshold. Counted by glibc itself (``mallinfo2``): /proc/self/maps cannot
    tell, as the kernel merges a new mapping with an adjacent one.
    """
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED_AFTER_A_LARGER_FREE, mode],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    mapped = int(done.stdout)
    assert (mapped >= 4 * 1024 * 1024) == (mode == "mapped"), mapped


def test_the_writer_keeps_no_message_once_its_commit_is_answered(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/intake.db")
    prepare(engine)

    async def commit_and_wait() -> list[weakref.ref[Incoming]]:
        writer = GroupCommitWriter(engine)
        writer.start()
        first, second = _incoming(1, 1000), _incoming(2, 1000)
        await asyncio.gather(writer.submit(first), writer.submit(second))
        refs = weakref.ref(first), weakref.ref(second)
        del first, second
        await asyncio.sleep(0.05)  # the writer is idle, waiting for more
        gc.collect()
        alive = [ref for ref in refs if ref() is not None]
        await writer.close()
        return alive

    assert asyncio.run(commit_and_wait()) == []
    engine.dispose()
