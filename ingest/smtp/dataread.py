"""DATA read into one buffer, so that a session holds its message once.

aiosmtpd keeps DATA as a list of ``bytearray`` lines and joins them at the
end: for mail of 64-octet lines that list costs more than twice the message
(an object and an allocation per line), and the join adds a third copy before
the list is dropped. Under many concurrent large messages that was the
server's memory. Here every line goes, unstuffed, into one growing buffer
whose bytes are handed over without a final copy (``BytesIO.getvalue`` of an
unshared buffer returns it as it is), and a line past the limits is only
counted, never kept.

The rules are aiosmtpd's (1.4.6): DATA is read up to CRLF only, so a bare LF
before the dot is not the end of data (CVE-2024-27305); a line longer than
the stream's limit or data beyond ``data_size_limit`` is read to the end and
then refused, in the order aiosmtpd refuses them.
"""

from __future__ import annotations

import asyncio
import enum
import io
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Overrun(enum.Enum):
    """Why DATA was read to its end but not kept (aiosmtpd's ``_DataState``)."""

    TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
    TOO_MUCH = "552 Error: Too much mail data"


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> bytes | Overrun:
    """The message up to the lone dot, dot-unstuffed, or why it was refused."""
    buffer: io.BytesIO | None = io.BytesIO()
    overrun: Overrun | None = None
    size = 0
    mid_line = False  # the last read ended inside a line longer than the stream's limit
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as error:
            overrun = overrun or Overrun.TOO_LONG
            buffer = None
            line = await reader.read(error.consumed)
        if not mid_line and line == b".\r\n":
            break
        size += len(line)
        if overrun is None and size_limit and size > size_limit:
            overrun, buffer = Overrun.TOO_MUCH, None
        ends = line.endswith(b"\r\n")
        if buffer is not None and not mid_line and ends:
            if len(line) > line_limit:
                overrun, buffer = Overrun.TOO_LONG, None
            else:
                buffer.write(memoryview(line)[1:] if line[:1] == b"." else line)
        mid_line = not ends
    if overrun is not None:
        return overrun
    assert buffer is not None
    content = buffer.getvalue()
    buffer.close()
    return content


#: Messages up to this size are read on the event loop (at most a few
#: milliseconds, even for one that is all header): for them the hand-off to a
#: thread, with its two wake-ups and its fight for the GIL against the loop,
#: cost more than the reading. Larger ones are read beside the loop.
INLINE_BYTES = 16 * 1024


async def beside_loop(read: Callable[[bytes, *Ts], T], data: bytes, *args: *Ts) -> T:
    """``read(data, *args)``: here for a small message, in a thread for a large one."""
    if len(data) <= INLINE_BYTES:
        return read(data, *args)
    return await asyncio.to_thread(read, data, *args)
