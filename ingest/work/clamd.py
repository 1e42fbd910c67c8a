"""A client for clamd's INSTREAM command, over TCP or a unix socket.

The protocol: send ``zINSTREAM\\0``, then the data as chunks each prefixed
with its length as 4 big-endian bytes, then a zero length; clamd answers one
NUL-terminated line (``stream: OK``, ``stream: NAME FOUND`` or ``… ERROR``)
and closes the connection.

Anything that keeps us from getting a verdict (refused connection, timeout,
a reply we do not understand, a temporary clamd error) is
:class:`ClamdUnavailable`, a :class:`~policy.errors.ScannerUnavailable`: the
message stays queued and is scanned again in the next batch. The one error
that retrying cannot fix, a message larger than clamd's ``StreamMaxLength``,
is an answer of its own.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from policy.config.model import Listen
from policy.errors import ScannerUnavailable

CHUNK_SIZE = 64 * 1024
_MAX_REPLY = 4096
_SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded. ERROR"


class ClamdStatus(StrEnum):
    OK = "ok"
    FOUND = "found"
    SIZE_LIMIT = "size_limit"


@dataclass(frozen=True)
class ClamdReply:
    status: ClamdStatus
    signature: str = ""


class ClamdUnavailable(ScannerUnavailable):
    """clamd did not give a verdict; the message must wait."""


@dataclass(frozen=True)
class ClamdClient:
    """The clamd at ``address`` (``host:port`` or a unix socket path).

    ``timeout`` bounds one whole exchange, connecting included.
    """

    address: str
    timeout: float

    async def instream(self, data: bytes) -> ClamdReply:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await _exchange(Listen(listen=self.address), data)
        except TimeoutError:
            raise ClamdUnavailable(
                f"clamd at {self.address} did not answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise ClamdUnavailable(
                f"clamd at {self.address} is unreachable: {exc.strerror or exc}"
            ) from None
        return parse_reply(reply, self.address)


async def _exchange(target: Listen, data: bytes) -> str:
    # Plain non-blocking sockets, not asyncio streams: past its StreamMaxLength
    # clamd answers at once and closes, so our next write fails, and a stream
    # transport would then drop the answer waiting in the receive buffer.
    loop = asyncio.get_running_loop()
    with await _connect(target) as sock:
        try:
            await loop.sock_sendall(sock, b"zINSTREAM\0")
            for start in range(0, len(data), CHUNK_SIZE):
                chunk = data[start : start + CHUNK_SIZE]
                await loop.sock_sendall(sock, struct.pack(">I", len(chunk)) + chunk)
            await loop.sock_sendall(sock, struct.pack(">I", 0))
        except (BrokenPipeError, ConnectionResetError):
            pass  # clamd stopped reading; its answer says why
        reply = b""
        while b"\0" not in reply and len(reply) < _MAX_REPLY:
            received = await loop.sock_recv(sock, _MAX_REPLY)
            if not received:
                break
            reply += received
    return reply.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


async def _connect(target: Listen) -> socket.socket:
    """A connected non-blocking socket; each address of a host name is tried in turn."""
    loop = asyncio.get_running_loop()
    candidates: list[tuple[int, Any]]
    if target.is_unix:
        candidates = [(socket.AF_UNIX, target.listen)]
    else:
        host, port = target.host_port
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        candidates = [(family, address) for family, _, _, _, address in found]
    error: OSError = OSError(f"no address for {target.listen}")
    for family, address in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled by the timeout
            sock.close()
            raise
        return sock
    raise error


def parse_reply(reply: str, address: str) -> ClamdReply:
    if reply == "stream: OK":
        return ClamdReply(ClamdStatus.OK)
    if reply.startswith("stream: ") and reply.endswith(" FOUND"):
        return ClamdReply(ClamdStatus.FOUND, reply[len("stream: ") : -len(" FOUND")])
    if reply == _SIZE_LIMIT_REPLY:
        return ClamdReply(ClamdStatus.SIZE_LIMIT)
    raise ClamdUnavailable(f"clamd at {address} answered {reply[:200]!r}")
