"""Loopback SMTP relays that stand in for a mailbox's provider.

Real aiosmtpd servers with AUTH (LOGIN and PLAIN; with
:class:`OAuthRelayHandler` also XOAUTH2 and OAUTHBEARER, checked against the
tests' token endpoint), on STARTTLS or implicit TLS, with certificates from a
trustme CA that the mailbox trusts through its ``ca_file``. They run on an
event loop in their own thread, so that both async tests and CLI tests (which
run their own loop) can talk to them. A relay records what it accepted and
can be scripted to answer RCPT or DATA with chosen replies (``451`` then
``250``, or ``550``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from policy.config.sending import SmtpConfig
from tests.support.oauth_server import TokenEndpoint, new_ca

USER = "support@example.com"
PASSWORD = "correct horse battery staple"

T = TypeVar("T")
Mode = Literal["starttls", "ssl", "plain"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class RecordingHandler:
    """Accepts mail and keeps it; scripted replies are used up one per command."""

    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    data_attempts: int = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_replies:
            reply = self.rcpt_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 Ok: queued as "
        if not reply.startswith("250"):
            return reply
        assert isinstance(envelope.content, bytes)
        self.received.append(
            Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), envelope.content)
        )
        if reply.endswith("queued as "):
            reply += f"Q{len(self.received)}ABC"
        return reply


EXCHANGE_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)
EXCHANGE_REFUSED = "535 5.7.3 Authentication unsuccessful"
GMAIL_REFUSED = (
    "535 5.7.8 Username and Password not accepted. For more information, go to "
    "https://support.google.com/mail/?p=BadCredentials"
)


@dataclass
class OAuthRelayHandler(RecordingHandler):
    """A relay that logs in with bearer tokens from ``endpoint``, like Exchange Online
    (a plain ``535``) or, with ``gmail``, like Gmail (a JSON challenge first)."""

    endpoint: TokenEndpoint | None = None
    gmail: bool = False
    smtp_auth_disabled: bool = False
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # mechanism, user, verdict

    async def _bearer(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        blob = base64.b64decode(args[1]) if len(args) > 1 else b""
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        user = fields.get("user", "")
        if mechanism == "OAUTHBEARER":  # gs2 header: n,a=user,
            user = next((p[2:] for p in blob.decode().split("\x01")[0].split(",")
                         if p.startswith("a=")), "")  # fmt: skip
        token = fields.get("auth", "").removeprefix("Bearer ")
        assert self.endpoint is not None
        verdict = "disabled" if self.smtp_auth_disabled else self.endpoint.check(token, user)
        self.logins.append((mechanism, user, verdict))
        if verdict == "ok":
            return AuthResult(success=True, auth_data=user)
        if self.gmail:
            status = {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"}
            await server.challenge_auth(json.dumps(status))
            return AuthResult(success=False, handled=False, message=GMAIL_REFUSED)
        message = EXCHANGE_DISABLED if verdict == "disabled" else EXCHANGE_REFUSED
        return AuthResult(success=False, handled=False, message=message)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, "XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, "OAUTHBEARER", args)


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok, handled=False)


class RelayLoop:
    """An event loop in a thread; the relays live here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(
        self,
        handler: RecordingHandler,
        mode: Mode,
        cert: trustme.LeafCert | None,
        exclude: Sequence[str] = (),
    ) -> int:
        server_ctx: ssl.SSLContext | None = None
        if cert is not None:
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(server_ctx)

        def factory() -> SMTP:
            return SMTP(
                handler,
                hostname="relay.test",
                tls_context=server_ctx if mode == "starttls" else None,
                require_starttls=mode == "starttls",
                authenticator=_authenticate,
                # aiosmtpd only counts STARTTLS as encryption, and warns about
                # requiring AUTH without it; on implicit TLS AUTH stays optional.
                auth_required=mode == "starttls",
                auth_require_tls=mode == "starttls",
                auth_exclude_mechanism=exclude,
            )

        async def serve() -> asyncio.Server:
            return await self.loop.create_server(
                factory, "127.0.0.1", 0, ssl=server_ctx if mode == "ssl" else None
            )

        server = self.run(serve())
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Relays:
    """Starts relays on demand and writes the CA file mailboxes trust."""

    loop: RelayLoop
    ca: trustme.CA
    ca_file: Path

    def start(
        self,
        mode: Mode = "starttls",
        *,
        cert_for: str = "127.0.0.1",
        handler: RecordingHandler | None = None,
        exclude: Sequence[str] = (),
    ) -> tuple[int, RecordingHandler]:
        handler = handler or RecordingHandler()
        cert = None if mode == "plain" else self.ca.issue_cert(cert_for)
        return self.loop.start(handler, mode, cert, exclude), handler

    def config(self, port: int, encryption: str = "starttls", **changes: Any) -> SmtpConfig:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "account": USER,
            "password": PASSWORD,
            "encryption": encryption,
            "ca_file": self.ca_file,
            "timeout": 10,
        }
        values.update(changes)
        return SmtpConfig.model_validate(values)


@pytest.fixture(name="relays")
def relays_fixture(tmp_path: Path) -> Iterator[Relays]:
    """Import this function into a test module to use the fixture."""
    ca_file = tmp_path / "relay-ca.pem"
    ca = new_ca(ca_file)
    loop = RelayLoop()
    try:
        yield Relays(loop, ca, ca_file)
    finally:
        loop.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
