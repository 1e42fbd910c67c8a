"""One session with a mailbox's own SMTP server, step by step.

Replies go out through the server the mailbox is configured with, so the
customer sees an ordinary message from the support address. The session runs
its steps explicitly (connect, STARTTLS, login, MAIL, RCPT, DATA) instead of
one ``send_message`` call, so that a failure names the step it happened in and
the send test can print every step's answer. ``starttls`` means required: a
server that does not offer it is a TLS failure, never a plain-text send.

With OAuth 2.0 the access token is the first step (a token that cannot be had
is not worth a connection), and the login is ``AUTH OAUTHBEARER`` (RFC 7628)
where the server offers it, else ``AUTH XOAUTH2``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiosmtplib
from aiosmtplib.auth import auth_xoauth2_encode

from ingest.outbound.dkimsign import dkim_sign
from ingest.outbound.oauth import AccessToken, TokenSource, token_step
from ingest.outbound.smtpfail import (
    HINT_TLS,
    Diagnosis,
    Kind,
    SmtpFailure,
    Step,
    diagnose,
    failure,
    swap_hint,
)
from policy.config.model import MailboxConfig
from policy.config.sending import SmtpConfig

_CLOSE_POLLS = 100
# The probe only runs after a failure; a short configured timeout must not cut it off.
_PROBE = 5.0
_QUEUE_ID = re.compile(r"queued as\s+<?([A-Za-z0-9._@-]+)>?", re.I)


@dataclass(frozen=True)
class StepDone:
    step: Step
    detail: str
    reply: str


@dataclass(frozen=True)
class Delivered:
    """The server accepted the message: its final answer and queue id, if it named one."""

    reply: str
    queue_id: str | None


StepObserver = Callable[[StepDone], None]


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    """Verify against the system store, or only against the mailbox's own CA file.

    Loaded once per CA file (and again when the file changes: a new mtime or
    size) and shared by every connection, since parsing a CA bundle costs
    milliseconds of CPU per connection otherwise; nobody changes a context
    after it is made, which is what makes sharing it safe.
    """
    if smtp.ca_file is None:
        return _context(None, None)
    found = os.stat(smtp.ca_file)
    return _context(str(smtp.ca_file), (found.st_mtime_ns, found.st_size))


@functools.lru_cache(maxsize=64)
def _context(cafile: str | None, _version: tuple[int, int] | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def _reply(response: aiosmtplib.SMTPResponse) -> str:
    return f"{response.code} {response.message}"


async def speaks_tls(host: str, port: int, wait: float) -> bool:
    """Whether the server completes a TLS handshake on this port; explains a silent server."""
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=probe, server_hostname=host), wait
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), wait)
    return True


class Relay:
    """``async with Relay(...) as relay: await relay.send(...)``; failures are classified."""

    def __init__(
        self,
        smtp: SmtpConfig,
        local_hostname: str,
        on_step: StepObserver | None = None,
        token: TokenSource | None = None,
    ) -> None:
        self.smtp = smtp
        self._on_step = on_step
        self._token_source = token
        # The token this session logged in with (to drop it if the server refused it).
        self.token: AccessToken | None = None
        self._socket: socket.socket | None = None
        self._client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            local_hostname=local_hostname,
            timeout=smtp.timeout,
            use_tls=smtp.encryption == "ssl",
            start_tls=False,
        )

    async def _tls_context(self) -> ssl.SSLContext | None:
        if self.smtp.encryption == "none":
            return None
        try:  # a first load reads and parses files: not on the event loop
            return await asyncio.to_thread(tls_context, self.smtp)
        except (OSError, ssl.SSLError) as exc:
            text = f"cannot load the CA file {self.smtp.ca_file}: {exc}"
            hint = "ca_file must be a readable PEM file of the CA certificates to trust"
            raise failure(Diagnosis(Step.CONNECT, Kind.TLS, False, text, hint)) from None

    async def _run(
        self,
        step: Step,
        detail: str,
        action: Awaitable[aiosmtplib.SMTPResponse],
        *,
        shown: bool = True,
    ) -> aiosmtplib.SMTPResponse:
        try:
            response = await action
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            raise failure(await self._diagnose(exc, step)) from exc
        if self._on_step is not None and shown:
            self._on_step(StepDone(step, detail, _reply(response)))
        return response

    async def _diagnose(self, exc: BaseException, step: Step) -> Diagnosis:
        # A STARTTLS or plain client that got no greeting may be talking to an
        # implicit-TLS port; a quick probe turns a baffling timeout into the fix.
        tls_server = (
            step is Step.CONNECT
            and self.smtp.encryption != "ssl"
            and isinstance(exc, aiosmtplib.SMTPTimeoutError)
            and await speaks_tls(self.smtp.host, self.smtp.port, max(self.smtp.timeout, _PROBE))
        )
        return diagnose(exc, step, self.smtp, tls_server=tls_server)

    async def __aenter__(self) -> Relay:
        smtp = self.smtp
        how = {"ssl": "implicit TLS", "starttls": "STARTTLS", "none": "no encryption"}
        context = await self._tls_context()
        if smtp.oauth:
            await self._fetch_token()
        try:
            await self._run(
                Step.CONNECT,
                f"{smtp.host}:{smtp.port} ({how[smtp.encryption]})",
                self._client.connect(tls_context=context),
            )
            self._socket = self._client.get_transport_info("socket")
            if smtp.encryption == "starttls":
                await self._starttls()
            if smtp.account is not None and self.token is not None:
                await self._bearer_login(smtp.account, self.token)
            elif smtp.account is not None:
                password = smtp.password.get_secret_value() if smtp.password is not None else ""
                await self._run(
                    Step.LOGIN, f"as {smtp.account}", self._client.login(smtp.account, password)
                )
        except BaseException:
            await self._close()
            raise
        return self

    async def _fetch_token(self) -> None:
        if self._token_source is None:
            raise RuntimeError("an OAuth 2.0 relay needs a token source")
        self.token = await self._token_source.get()
        if self._on_step is not None:
            auth = self.smtp.auth
            detail = f"{auth.provider} {auth.flow} for {self.smtp.account}"
            self._on_step(StepDone(Step.TOKEN, detail, token_step(self.token)))

    async def _bearer_login(self, account: str, token: AccessToken) -> None:
        if not self._client.supports_extension("auth"):
            # As login() does for a password: the EHLO after TLS is part of the step.
            await self._run(Step.LOGIN, "EHLO", self._client.ehlo(), shown=False)
        offered = self._client.server_auth_methods
        if "oauthbearer" in offered:
            mechanism, cancel = "OAUTHBEARER", base64.b64encode(b"\x01")
            gs2 = f"n,a={account},\x01host={self.smtp.host}\x01port={self.smtp.port}\x01"
            initial = base64.b64encode(f"{gs2}auth=Bearer {token.value}\x01\x01".encode())
        elif "xoauth2" in offered:
            mechanism, cancel = "XOAUTH2", b""
            initial = auth_xoauth2_encode(account, token.value)
        else:
            listed = ", ".join(m.upper() for m in offered) or "none"
            text = f"the server offers no OAuth login (AUTH mechanisms: {listed})"
            hint = "check the server name: Microsoft 365 and Google offer XOAUTH2 after STARTTLS"
            raise failure(Diagnosis(Step.LOGIN, Kind.AUTHENTICATION, False, text, hint))

        async def login() -> aiosmtplib.SMTPResponse:
            response = await self._client.execute_command(b"AUTH", mechanism.encode(), initial)
            challenge = ""
            if response.code == 334:  # the error, as JSON; the client must answer to get the code
                with contextlib.suppress(ValueError):
                    decoded = base64.b64decode(response.message[:4096]).decode("utf-8", "replace")
                    challenge = " ".join(decoded.split())
                response = await self._client.execute_command(cancel)
            if response.code != 235:
                said = f"{response.message} {challenge}".strip()
                raise aiosmtplib.SMTPAuthenticationError(response.code, said)
            return response

        try:
            await self._run(Step.LOGIN, f"as {account} ({mechanism})", login())
        except SmtpFailure:
            if self._token_source is not None:
                await self._token_source.refused(token)
            raise

    async def _starttls(self) -> None:
        await self._run(Step.STARTTLS, "EHLO", self._client.ehlo())
        if not self._client.supports_extension("starttls"):
            text = "the server does not offer STARTTLS; refusing to send in plain text"
            hint = "; ".join(p for p in (HINT_TLS, swap_hint(self.smtp)) if p)
            raise failure(Diagnosis(Step.STARTTLS, Kind.TLS, False, text, hint))
        await self._run(Step.STARTTLS, "upgrade to TLS", self._client.starttls())

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivered:
        """MAIL, RCPT for each recipient, DATA; every recipient must be accepted."""
        await self._run(Step.SENDER, f"MAIL FROM:<{sender}>", self._client.mail(sender))
        for recipient in recipients:
            await self._run(Step.RECIPIENT, f"RCPT TO:<{recipient}>", self._client.rcpt(recipient))
        response = await self._run(Step.DATA, f"{len(data)} bytes", self._client.data(data))
        match = _QUEUE_ID.search(response.message)
        return Delivered(_reply(response), match.group(1) if match else None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._client.is_connected:
            # Whatever happened is already decided; a server that hangs up
            # without answering QUIT changes nothing about it.
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await self._client.quit(timeout=min(self.smtp.timeout, 5))
        self._client.close()
        # Closing TLS is a small exchange of its own that finishes after
        # close() returns; wait for it briefly so no transport outlives us.
        for _ in range(_CLOSE_POLLS):
            if self._socket is None or self._socket.fileno() == -1:
                return
            await asyncio.sleep(0.01)


async def deliver(
    mailbox: MailboxConfig,
    smtp: SmtpConfig,
    local_hostname: str,
    raw: bytes,
    recipients: Sequence[str],
    on_step: StepObserver | None = None,
    token: TokenSource | None = None,
) -> Delivered:
    """Send ``raw`` from the mailbox's address through its relay, DKIM-signed if configured."""
    # RSA signing takes milliseconds of CPU: not on the event loop.
    data = raw
    if smtp.dkim is not None:
        data = await asyncio.to_thread(dkim_sign, raw, smtp.dkim, mailbox.address)
    async with Relay(smtp, local_hostname, on_step, token) as relay:
        return await relay.send(mailbox.address, recipients, data)
