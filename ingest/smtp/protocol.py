"""aiosmtpd protocol classes with the behaviour a production MX needs.

aiosmtpd has no connection limits, answers size overruns with texts that lack
enhanced status codes, hides the raw RCPT argument (so source routes are
invisible once parsed) and refuses DATA lines over 1000 octets. These
subclasses add exactly that and nothing else; all decisions stay in the
handler (``ingest/smtp/listener.py``).

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
import functools
import logging
import os
import ssl
import stat
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from ingest.ops import allocator
from ingest.ops.shutdown import finished_within
from ingest.smtp.commands import Command, aiosmtpd_names, command_table, parsed_path
from ingest.smtp.dataread import Overrun, read_data
from policy.config.model import Listen, ServerConfig

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
    """Fair shares of the connections; aiosmtpd has no limits of its own.

    Strangers share ``total`` sessions, at most ``per_ip`` each. LMTP and
    ``policy.trusted_networks`` (our own MTA) have a budget of their own,
    ``trusted_total``, so that strangers can never lock them out. When the
    strangers' share is full, the slowest stranger's session (fewest bytes
    per second over its life, below ``min_rate``, older than a few seconds:
    an idle or trickling one) is closed to make room, rather than refusing
    the newcomer.

    Bounding the sessions is what bounds the memory (each holds at most one
    message), so the gate also makes large buffers go back to the system when
    freed, and trims the allocator's arenas whenever the sessions have drained
    after carrying more than ``TRIM_AFTER`` octets (``ingest/ops/allocator.py``).
    """

    GRACE = 5.0  # seconds a new session has before it can be judged slow
    TRIM_AFTER = 64 * 1024 * 1024

    def __init__(
        self, total: int, per_ip: int, trusted_total: int = 100, min_rate: float = 100
    ) -> None:
        self.total = total
        self.per_ip = per_ip
        self.trusted_total = trusted_total
        self.min_rate = min_rate
        self.open: Counter[str] = Counter()  # strangers' sessions per address
        self.trusted_open = 0
        self.sessions: dict[asyncio.BaseTransport, _Limits] = {}
        self._untrimmed = 0  # octets received by sessions closed since the last trim

        self._idle = asyncio.Event()
        self._idle.set()
        allocator.map_large_blocks()

    def configure(self, server: ServerConfig, processes: int = 1) -> None:
        """Take the limits from ``server``. With several intake processes
        (``server.processes``) each process keeps its share of every limit, rounded
        up: the kernel spreads connections over the processes, and a count shared
        between them would cost a lock on every connection."""
        self.total = -(-server.max_connections // processes)
        self.per_ip = -(-server.max_connections_per_ip // processes)
        self.trusted_total = -(-server.max_trusted_connections // processes)
        self.min_rate = server.min_session_rate

    def add(self, transport: asyncio.BaseTransport, session: _Limits) -> None:
        self.sessions[transport] = session
        self._idle.clear()

    def discard(self, transport: asyncio.BaseTransport) -> None:
        session = self.sessions.pop(transport, None)
        if session is not None:
            self._untrimmed += session.received
        if not self.sessions:
            self._idle.set()
            if self._untrimmed > self.TRIM_AFTER:
                self._untrimmed = 0
                allocator.trim()

    async def drain(self, grace: float) -> None:
        """Let open sessions finish for ``grace`` seconds, then hang up on the rest."""
        # Not wait_for: on Python 3.11 it can lose a cancellation (see ingest.ops.shutdown).
        await finished_within(self._idle.wait(), grace)
        for transport in list(self.sessions):
            transport.close()
        await finished_within(self._idle.wait(), 1)

    def enter(self, ip: str, *, trusted: bool = False) -> bool:
        if trusted:
            if self.trusted_open >= self.trusted_total:
                return False
            self.trusted_open += 1
            return True
        if self.open[ip] >= self.per_ip:
            return False
        if sum(self.open.values()) >= self.total and not self._make_room():
            return False
        self.open[ip] += 1
        return True

    def leave(self, ip: str, *, trusted: bool = False) -> None:
        if trusted:
            self.trusted_open -= 1
            return
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]

    def _make_room(self) -> bool:
        now = asyncio.get_running_loop().time()
        slow = [
            s
            for s in self.sessions.values()
            if not s.gate_trusted
            and not s.closing
            and s.age(now) >= self.GRACE
            and s.rate(now) < self.min_rate
        ]
        if not slow:
            return False
        min(slow, key=lambda s: s.rate(now)).hang_up(
            "421 4.4.2 Closing a slow or idle session to serve others", "slow_session"
        )
        return True


class _Limits:
    """Mixed into both protocols: connection gate, session budgets, raw RCPT argument,
    reply texts, lines."""

    line_length_limit: int
    gate: Gate
    on_refusal: Callable[[str, str], None]
    is_trusted: Callable[[str], bool]
    lifetime: float
    max_commands: int
    last_rcpt_arg: str
    _smtp_methods: dict[str, Any]
    gate_trusted = False
    closing = False
    _gate_ip: str | None = None
    _gate_transport: asyncio.BaseTransport
    _born = 0.0
    _received = 0
    _commands = 0
    _busy = False
    _lifetime_handle: asyncio.TimerHandle | None = None

    def budget_commands(self) -> None:
        """Count the commands and know when one runs: aiosmtpd's command table, each
        method wrapped (the wrappers made once per class, bound here)."""
        self._smtp_methods = {
            name: types.MethodType(counted, self)
            for name, counted in command_table(type(self), _counting).items()
        }

    def __dir__(self) -> list[str]:
        return aiosmtpd_names(type(self))

    def age(self, now: float) -> float:
        return now - self._born

    @property
    def received(self) -> int:
        """Octets the client has sent over the session's life."""
        return self._received

    def rate(self, now: float) -> float:
        """Bytes per second the client has sent over the session's life."""
        return self._received / max(self.age(now), 1e-3)

    def hang_up(self, reply: str | None, reason: str) -> None:
        """Close the session now (``reply`` first, if given), and say why in one line."""
        transport = getattr(self, "transport", None)
        if transport is None or self.closing:
            return
        self.closing = True
        if reply is not None:
            transport.write(reply.encode() + b"\r\n")
        self.on_refusal(self._gate_ip or "unknown", f"{reason}: session closed")
        transport.close()

    def _lifetime_over(self) -> None:
        if self._busy:  # never cut a command (DATA above all) in the middle
            loop = asyncio.get_running_loop()
            self._lifetime_handle = loop.call_later(5, self._lifetime_over)
            return
        self.hang_up("421 4.4.2 Session too long; please reconnect", "session_too_long")

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)  # type: ignore[misc]

    def __init__(self, handler: Any, *, data_size_limit: int, **kwargs: Any) -> None:
        # Read by aiosmtpd's __init__ for its stream reader: set it first. The
        # extra octets are the CRLF and a transparency dot.
        self.line_length_limit = data_size_limit + 3
        super().__init__(handler, data_size_limit=data_size_limit, **kwargs)  # type: ignore[call-arg]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if getattr(self, "transport", None) is None:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else "unix"
            trusted = self.is_trusted(ip)
            if not self.gate.enter(ip, trusted=trusted):
                reply = "421 4.7.0 Too many connections; try again later"
                self.on_refusal(ip, reply)
                transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            loop = asyncio.get_running_loop()
            self._gate_ip = ip
            self.gate_trusted = trusted
            self._gate_transport = transport
            self._born = loop.time()
            self._lifetime_handle = loop.call_later(self.lifetime, self._lifetime_over)
            self.gate.add(transport, self)
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if self._gate_ip is None:
            return  # refused at the gate: aiosmtpd never saw this connection
        if self._lifetime_handle is not None:
            self._lifetime_handle.cancel()
        self.gate.leave(self._gate_ip, trusted=self.gate_trusted)
        self.gate.discard(self._gate_transport)
        self._gate_ip = None
        super().connection_lost(error)  # type: ignore[misc]

    def eof_received(self) -> bool | None:
        if self._gate_ip is None:
            return False
        return super().eof_received()  # type: ignore[misc,no-any-return]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of a MAIL or RCPT path, remembered for the paths seen last."""
        limit: int = getattr(self, "local_part_limit", 0)
        return parsed_path(arg, limit)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.last_rcpt_arg = arg or ""
        await super().smtp_RCPT(arg)  # type: ignore[misc]

    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA with the message read into one buffer (``ingest/smtp/dataread.py``)."""
        smtp: Any = self  # aiosmtpd's own session state, which the mixin does not declare
        if await smtp.check_helo_needed() or await smtp.check_auth_needed("DATA"):
            return
        if not smtp.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(smtp._reader, smtp.data_size_limit, self.line_length_limit)
        except asyncio.CancelledError:  # the connection went away during DATA
            smtp._writer.close()
            raise
        if isinstance(content, Overrun):
            await self.push(content.value)
            smtp._set_post_data_state()
            return
        smtp.envelope.content = smtp.envelope.original_content = content
        del content
        status = await smtp._call_handler_hook("DATA")
        smtp._set_post_data_state()
        await self.push(status)

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


def _counting(method: Command) -> Command:
    """``method`` counting the session's commands (``max_commands``) and marking the
    session busy while it runs."""

    @functools.wraps(method)  # keeps the HELP text aiosmtpd reads from the method
    async def counted(self: _Limits, arg: str | None) -> None:
        self._commands += 1
        if self._commands > self.max_commands:
            await self.push("421 4.7.0 Too many commands in one session; closing")
            self.hang_up(None, "too_many_commands")
            return
        self._busy = True
        try:
            await method(self, arg)
        finally:
            self._busy = False

    return counted


class FirstlineSMTP(_Limits, SMTP):
    pass


class FirstlineLMTP(_Limits, LMTP):
    pass


async def start_listener(
    listen: Listen, factory: Callable[[], Any], *, reuse_port: bool = False
) -> asyncio.Server:
    """Bind a TCP address or a unix socket (replacing a stale socket file);
    ``reuse_port``: a TCP port other intake processes bind too (``SO_REUSEPORT``)."""
    loop = asyncio.get_running_loop()
    if listen.is_unix:
        path = Path(listen.listen)
        _remove_stale_socket(path)
        server = await loop.create_unix_server(factory, path=str(path))
        os.chmod(path, 0o666)  # noqa: S103 - the MTA in front of us must be able to connect
        return server
    host, port = listen.host_port
    return await loop.create_server(
        factory, host=host, port=port, reuse_address=True, reuse_port=reuse_port or None
    )


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
    is_trusted: Callable[[str], bool],
    lifetime: float,
    max_commands: int,
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
        server.is_trusted = is_trusted
        server.lifetime = lifetime
        server.max_commands = max_commands
        server.budget_commands()
        return server

    return make
