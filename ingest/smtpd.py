"""aiosmtpd protocol classes with the behaviour a production MX needs.

aiosmtpd has no connection limits, answers size overruns with texts that lack
enhanced status codes, hides the raw RCPT argument (so source routes are
invisible once parsed) and refuses DATA lines over 1000 octets. These
subclasses add exactly that and nothing else; all decisions stay in the
handler (``ingest/listener.py``).

Long lines: real mailers send HTML and unwrapped base64 as single lines of
tens of kilobytes, and Postfix accepts them, so a line may be as long as the
message may be large (aiosmtpd's ``line_length_limit``, which is also the
read buffer's limit). DATA is still read up to CRLF only, so the smuggling
fix (a bare LF before the dot is not the end of data) is untouched; a command
line is still refused over its own limit, and the most a session can buffer
stays the message size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from policy.config import Listen

log = logging.getLogger("mail.smtp")

_SIZE_TEXT = b"552 5.3.4 Message size exceeds fixed maximum message size"
# aiosmtpd's own refusals, rewritten with enhanced codes: (reply, stage, reason code).
_REWRITES: dict[bytes, tuple[bytes, str, str]] = {
    b"552 Error: Too much mail data": (_SIZE_TEXT, "DATA", "message_too_big"),
    b"552 Error: message size exceeds fixed maximum message size": (
        _SIZE_TEXT,
        "MAIL",
        "message_too_big",
    ),
    # Lines may be as long as the message may be large (see above): a line
    # longer than that is a message over the size limit.
    b"500 Line too long (see RFC5321 4.5.3.1.6)": (_SIZE_TEXT, "DATA", "message_too_big"),
}


class Gate:
    """Counts sessions globally and per client address; aiosmtpd has no limits."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open: Counter[str] = Counter()
        self.sessions: set[asyncio.BaseTransport] = set()

        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, transport: asyncio.BaseTransport) -> None:
        self.sessions.add(transport)
        self._idle.clear()

    def discard(self, transport: asyncio.BaseTransport) -> None:
        self.sessions.discard(transport)
        if not self.sessions:
            self._idle.set()

    async def drain(self, grace: float) -> None:
        """Let open sessions finish for ``grace`` seconds, then hang up on the rest."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for transport in list(self.sessions):
            transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 1)

    def enter(self, ip: str) -> bool:
        if sum(self.open.values()) >= self.total or self.open[ip] >= self.per_ip:
            return False
        self.open[ip] += 1
        return True

    def leave(self, ip: str) -> None:
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


class _Limits:
    """Mixed into both protocols: connection gate, raw RCPT argument, reply texts, lines."""

    line_length_limit: int
    gate: Gate
    on_refusal: Callable[[str, str], None]
    last_rcpt_arg: str
    _gate_ip: str | None = None
    _gate_transport: asyncio.BaseTransport

    def __init__(self, handler: Any, *, data_size_limit: int, **kwargs: Any) -> None:
        # Read by aiosmtpd's __init__ for its stream reader: set it first. The
        # extra octets are the CRLF and a transparency dot.
        self.line_length_limit = data_size_limit + 3
        super().__init__(handler, data_size_limit=data_size_limit, **kwargs)  # type: ignore[call-arg]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if getattr(self, "transport", None) is None:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else "unix"
            if not self.gate.enter(ip):
                reply = "421 4.7.0 Too many connections; try again later"
                self.on_refusal(ip, reply)
                transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._gate_ip = ip
            self._gate_transport = transport
            self.gate.add(transport)
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if self._gate_ip is None:
            return  # refused at the gate: aiosmtpd never saw this connection
        self.gate.leave(self._gate_ip)
        self.gate.discard(self._gate_transport)
        self._gate_ip = None
        super().connection_lost(error)  # type: ignore[misc]

    def eof_received(self) -> bool | None:
        if self._gate_ip is None:
            return False
        return super().eof_received()  # type: ignore[misc,no-any-return]

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.last_rcpt_arg = arg or ""
        await super().smtp_RCPT(arg)  # type: ignore[misc]

    async def push(self, status: str | bytes) -> None:
        data = status.encode("utf-8") if isinstance(status, str) else status
        rewrite = _REWRITES.get(data)
        if rewrite is not None:
            data, stage, reason = rewrite
            handler: Any = getattr(self, "event_handler", None)
            if handler is not None and hasattr(handler, "protocol_refusal"):
                handler.protocol_refusal(
                    getattr(self, "session", None),
                    getattr(self, "envelope", None),
                    stage,
                    data.decode(),
                    reason,
                )
        await super().push(data)  # type: ignore[misc]


class FirstlineSMTP(_Limits, SMTP):
    pass


class FirstlineLMTP(_Limits, LMTP):
    pass


async def start_listener(
    listen: Listen,
    factory: Callable[[], Any],
) -> asyncio.Server:
    """Bind a TCP address or a unix socket (replacing a stale socket file)."""
    loop = asyncio.get_running_loop()
    if listen.is_unix:
        path = Path(listen.listen)
        _remove_stale_socket(path)
        server = await loop.create_unix_server(factory, path=str(path))
        os.chmod(path, 0o666)  # noqa: S103 - the MTA in front of us must be able to connect
        return server
    host, port = listen.host_port
    return await loop.create_server(factory, host=host, port=port, reuse_address=True)


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a killed process would make bind fail; other files stay."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


def protocol_factory(
    proto: str,
    handler: Any,
    *,
    hostname: str,
    max_size: int,
    timeout: float,
    gate: Gate,
    on_refusal: Callable[[str, str], None],
    tls_context: ssl.SSLContext | None = None,
) -> Callable[[], SMTP]:
    cls = FirstlineLMTP if proto == "LMTP" else FirstlineSMTP

    def make() -> SMTP:
        server = cls(
            handler,
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="firstline",
            tls_context=tls_context,
            timeout=timeout,
            # Bounds what one session may repeat; RCPT may be refused many times
            # (a forwarder probing addresses) before we hang up with 421.
            command_call_limit={"RCPT": 1000, "NOOP": 20, "RSET": 50, "*": 100},
        )
        server.gate = gate
        server.on_refusal = on_refusal
        return server

    return make
