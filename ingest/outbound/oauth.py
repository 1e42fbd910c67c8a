"""OAuth 2.0 access tokens for the mailboxes' relays (``AUTH XOAUTH2`` / ``OAUTHBEARER``).

Token requests go through authlib's OAuth 2.0 client over httpx (which we
already use); we only choose the grant and sign the JWT assertions with
authlib's own helpers:

- Microsoft, flow ``app``: client credentials, with a client secret or a
  certificate (a ``private_key_jwt`` client assertion carrying ``x5t``);
- Google, flow ``app``: a service account's signed JWT (RFC 7523) with
  ``sub`` = the mailbox, for domain-wide delegation;
- flow ``delegated`` (any provider): the refresh-token grant, the refresh
  token coming from the file or from ``firstline oauth login`` (the device
  authorization grant, RFC 8628); a rotated one is stored at once.

A token is kept until :data:`MARGIN` before it expires, in this process and
in the database (:mod:`storage.oauth_tokens`), and refreshed by one process for all.
Every failure becomes an :class:`ingest.outbound.smtpfail.SmtpFailure` at step
``token``, with the provider's words and a hint.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
import warnings
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign, sign_jwt_bearer_assertion
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.outbound.smtpfail import SmtpFailure, failure, token_diagnosis
from policy.config.sending import SmtpAuthConfig, SmtpConfig
from storage import oauth_tokens as stored
from storage.lease import LeaseLost
from storage.models import utcnow

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 package and warns when it falls back to
    # httpx, which the rest of firstline (and FastAPI's test client) uses.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.base_client.errors import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

# A token is renewed this long before it expires, so none runs out mid-session.
MARGIN = timedelta(minutes=5)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DEFAULT_LIFETIME = 3600


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: datetime
    # How long it had left when handed out (for the send test's line).
    remaining: timedelta


class _Refused(Exception):
    """The provider answered with an OAuth error (or something that is not a token)."""

    def __init__(self, error: str, description: str, status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}" if description else error)


@dataclass(frozen=True)
class Grant:
    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _client(auth: SmtpAuthConfig, *, authenticate: bool = True) -> AsyncOAuth2Client:
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(auth.ca_file)) if auth.ca_file else True
    )
    secret = _secret(auth.client_secret) if authenticate else None
    return AsyncOAuth2Client(
        client_id=auth.client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        scope=auth.scopes,
        timeout=auth.timeout,
        verify=verify,
        trust_env=False,
    )


def _certificate_assertion(auth: SmtpAuthConfig, now: datetime) -> str:
    """Microsoft's client assertion: signed with the app's key, naming its certificate."""
    pem = _secret(auth.certificate) or ""
    certificate = x509.load_pem_x509_certificate(pem.encode())
    thumbprint = hashlib.sha1(certificate.public_bytes(Encoding.DER)).digest()  # noqa: S324
    issued = int(now.timestamp())
    assertion: bytes | str = private_key_jwt_sign(
        RSAKey.import_key(pem),
        auth.client_id,
        auth.endpoint,
        claims={"nbf": issued},
        header={"alg": "RS256", "x5t": base64.urlsafe_b64encode(thumbprint).decode().rstrip("=")},
        issued_at=issued,
        expires_at=issued + 600,
    )
    return assertion.decode() if isinstance(assertion, bytes) else assertion


def _service_account_assertion(auth: SmtpAuthConfig, account: str, now: datetime) -> str:
    key = json.loads(_secret(auth.service_account) or "{}")
    issued = int(now.timestamp())
    header = {"alg": "RS256", "kid": key.get("private_key_id", "")}
    assertion: bytes | str = sign_jwt_bearer_assertion(
        RSAKey.import_key(key["private_key"]),
        issuer=key["client_email"],
        audience=auth.endpoint,
        subject=auth.subject or account,
        issued_at=issued,
        expires_at=issued + 3600,
        claims={"scope": auth.scopes},
        header=header,
    )
    return assertion.decode() if isinstance(assertion, bytes) else assertion


def _grant(answer: dict[str, Any], now: datetime) -> Grant:
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise _Refused("invalid_response", "the token endpoint answered without an access_token")
    try:
        lifetime = int(answer.get("expires_in", _DEFAULT_LIFETIME))
    except (TypeError, ValueError):
        lifetime = _DEFAULT_LIFETIME
    rotated = answer.get("refresh_token")
    return Grant(
        token, now + timedelta(seconds=lifetime), rotated if isinstance(rotated, str) else None
    )


async def _ask(request: Awaitable[Any]) -> dict[str, Any]:
    """One token request; OAuth errors keep the provider's own words."""
    try:
        answer = await request
    except OAuthError as exc:
        raise _Refused(str(exc.error), str(exc.description or "")) from None
    except httpx.HTTPStatusError as exc:
        raise _Refused(
            "http_error", f"HTTP {exc.response.status_code}", exc.response.status_code
        ) from None
    except ValueError as exc:
        raise _Refused("invalid_response", str(exc)) from None
    return dict(answer)


async def request_token(smtp: SmtpConfig, refresh_token: str | None, now: datetime) -> Grant:
    """Ask the provider for an access token with the grant the configuration names."""
    auth = smtp.auth
    account = smtp.account or ""
    if auth.flow == "delegated":
        token = refresh_token or _secret(auth.refresh_token)
        if not token:
            raise _Refused("no_refresh_token", "no refresh token is stored for this mailbox yet")
        async with _client(auth) as client:
            return _grant(await _ask(client.refresh_token(auth.endpoint, refresh_token=token)), now)
    if auth.provider == "google":
        async with _client(auth, authenticate=False) as client:
            assertion = _service_account_assertion(auth, account, now)
            request = client.fetch_token(auth.endpoint, grant_type=JWT_BEARER, assertion=assertion)
            return _grant(await _ask(request), now)
    if auth.certificate is not None:
        async with _client(auth, authenticate=False) as client:
            request = client.fetch_token(
                auth.endpoint,
                grant_type="client_credentials",
                client_assertion_type=CLIENT_ASSERTION,
                client_assertion=_certificate_assertion(auth, now),
            )
            return _grant(await _ask(request), now)
    async with _client(auth) as client:
        return _grant(
            await _ask(client.fetch_token(auth.endpoint, grant_type="client_credentials")), now
        )


def _failed(smtp: SmtpConfig, exc: BaseException) -> SmtpFailure:
    if isinstance(exc, _Refused):
        return failure(token_diagnosis(smtp, exc.error, exc.description, exc.status))
    if isinstance(exc, httpx.HTTPError | OSError):  # the endpoint was not reached
        return failure(token_diagnosis(smtp, "", str(exc) or type(exc).__name__, None, exc=exc))
    # The certificate or the service account's key could not be read or used.
    text = f"{type(exc).__name__}: {exc}"
    return failure(token_diagnosis(smtp, "invalid_key", text, None))


# --- the shared cache ---------------------------------------------------------


@dataclass
class _Held:
    credentials: str
    token: AccessToken


class Tokens:
    """Access tokens of one database's mailboxes, for every task of this process.

    ``get`` answers from memory while a token lasts, else from the database
    (another process may have refreshed it), else claims the refresh; a
    process that finds the refresh claimed elsewhere waits for its result.
    """

    _by_engine: ClassVar[weakref.WeakKeyDictionary[Engine, Tokens]] = weakref.WeakKeyDictionary()

    def __init__(self, engine: Engine, *, poll: float = 0.05) -> None:
        # Weakly: the shared instance is a value keyed by this engine, and a strong
        # reference would keep engine and pool alive for good.
        self._engine = weakref.ref(engine)
        self._poll = poll
        self._memory: dict[str, _Held] = {}
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    @classmethod
    def shared(cls, engine: Engine) -> Tokens:
        """The one instance for ``engine`` in this process."""
        if engine not in cls._by_engine:
            cls._by_engine[engine] = cls(engine)
        return cls._by_engine[engine]

    @property
    def engine(self) -> Engine:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of these tokens was disposed of")
        return engine

    def source(self, mailbox: str, smtp: SmtpConfig, now: datetime | None = None) -> TokenSource:
        return TokenSource(self, mailbox, smtp, now)

    async def get(self, mailbox: str, smtp: SmtpConfig, now: datetime | None = None) -> AccessToken:
        key = mailbox.lower()
        credentials = smtp.credentials()
        # One lock per event loop: the CLI and the tests run several loops in turn.
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(key, asyncio.Lock()):
            at = now or utcnow()
            held = self._memory.get(key)
            if held is not None and held.credentials == credentials:
                expires = held.token.expires_at
                if expires - MARGIN > at:
                    return AccessToken(held.token.value, expires, expires - at)
            token = await self._from_store(key, smtp, credentials, at)
            self._memory[key] = _Held(credentials, token)
            return token

    async def _from_store(
        self, key: str, smtp: SmtpConfig, credentials: str, now: datetime
    ) -> AccessToken:
        deadline = asyncio.get_running_loop().time() + 2 * smtp.auth.timeout + 5
        while True:
            found, claim = await asyncio.to_thread(self._look, key, credentials, now, smtp)
            if found is not None:
                return AccessToken(found.access_token, found.expires_at, found.expires_at - now)
            if claim is not None:
                return await self._refresh(key, smtp, credentials, claim, now)
            if asyncio.get_running_loop().time() > deadline:
                text = "another process has been refreshing this mailbox's token for too long"
                raise _failed(smtp, TimeoutError(text))
            await asyncio.sleep(self._poll)

    def _look(
        self, key: str, credentials: str, now: datetime, smtp: SmtpConfig
    ) -> tuple[stored.Stored | None, stored.Refresh | None]:
        with Session(self.engine) as session, session.begin():
            found = stored.usable(session, key, credentials, now + MARGIN)
            if found is not None:
                return found, None
            seconds = smtp.auth.timeout + 5
            claim = stored.begin_refresh(session, key, credentials, now=now, seconds=seconds)
            if claim is None:
                return None, None
            # Another process may have stored a token between the look and the claim.
            found = stored.usable(session, key, credentials, now + MARGIN)
            if found is not None:
                stored.abandon_refresh(session, claim)
            return found, None if found is not None else claim

    async def _refresh(
        self, key: str, smtp: SmtpConfig, credentials: str, claim: stored.Refresh, now: datetime
    ) -> AccessToken:
        try:
            # httpx's timeout is per read; a provider dripping bytes must not hold the claim.
            async with asyncio.timeout(smtp.auth.timeout):
                grant = await request_token(smtp, claim.refresh_token, now)
        except (
            _Refused,
            httpx.HTTPError,
            OSError,
            ValueError,
            TypeError,
            KeyError,
            JoseError,
        ) as exc:
            await asyncio.to_thread(self._write, stored.abandon_refresh, claim)
            raise _failed(smtp, exc) from None
        except BaseException:
            await asyncio.to_thread(self._write, stored.abandon_refresh, claim)
            raise

        def save(session: Session) -> None:
            stored.finish_refresh(
                session, claim, credentials,
                access_token=grant.access_token, expires_at=grant.expires_at,
                refresh_token=grant.refresh_token,
            )  # fmt: skip

        # LeaseLost: someone else stored a newer one meanwhile; this token is still valid.
        with contextlib.suppress(LeaseLost):
            await asyncio.to_thread(self._write, save)
        return AccessToken(grant.access_token, grant.expires_at, grant.expires_at - now)

    def _write(self, action: Callable[..., None], *args: Any) -> None:
        with Session(self.engine) as session, session.begin():
            action(session, *args)

    async def refused(self, mailbox: str, token: AccessToken) -> None:
        """The server turned the token down: ask for a new one next time."""
        key = mailbox.lower()
        held = self._memory.get(key)
        if held is not None and held.token.value == token.value:
            del self._memory[key]
        await asyncio.to_thread(self._write, stored.forget_access_token, key, token.value)


@dataclass(frozen=True)
class TokenSource:
    """One mailbox's tokens, as a relay session asks for them."""

    tokens: Tokens
    mailbox: str
    smtp: SmtpConfig
    now: datetime | None = None

    async def get(self) -> AccessToken:
        return await self.tokens.get(self.mailbox, self.smtp, self.now)

    async def refused(self, token: AccessToken) -> None:
        await self.tokens.refused(self.mailbox, token)


# --- the device authorization grant (RFC 8628) -------------------------------


@dataclass(frozen=True)
class DeviceCode:
    """What the user must do: open ``uri`` and enter ``user_code``."""

    uri: str
    user_code: str
    message: str
    device_code: str = field(repr=False)
    interval: float
    expires_in: float


async def start_device_login(smtp: SmtpConfig) -> DeviceCode:
    auth = smtp.auth
    url = auth.device_endpoint
    assert url is not None, "the caller checks that the provider has a device endpoint"
    async with _client(auth, authenticate=False) as client:
        try:
            response = await client.request(
                "POST",
                url,
                data={"client_id": auth.client_id, "scope": auth.scopes},
                withhold_token=True,
            )
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _failed(smtp, exc) from None
    if not isinstance(answer, dict) or "error" in answer or "device_code" not in answer:
        answer = answer if isinstance(answer, dict) else {}
        error = str(answer.get("error", "invalid_response"))
        raise failure(token_diagnosis(smtp, error, str(answer.get("error_description", "")), None))
    uri = answer.get("verification_uri") or answer.get("verification_url") or ""
    return DeviceCode(
        uri=str(uri),
        user_code=str(answer.get("user_code", "")),
        message=str(answer.get("message", "")),
        device_code=str(answer["device_code"]),
        interval=float(answer.get("interval", 5)),
        expires_in=float(answer.get("expires_in", 900)),
    )


async def finish_device_login(
    smtp: SmtpConfig,
    code: DeviceCode,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Grant:
    """Poll until the user approved (or refused, or the code expired)."""
    auth = smtp.auth
    interval = code.interval
    waited = 0.0
    async with _client(auth) as client:
        while True:
            try:
                answer = await _ask(
                    client.fetch_token(
                        auth.endpoint, grant_type=DEVICE_CODE, device_code=code.device_code
                    )
                )
                return _grant(answer, utcnow())
            except _Refused as exc:
                if exc.error == "slow_down":
                    interval += 5
                elif exc.error != "authorization_pending" or waited > code.expires_in:
                    raise _failed(smtp, exc) from None
            except (httpx.HTTPError, OSError) as exc:
                raise _failed(smtp, exc) from None
            await sleep(interval)
            waited += interval


def token_step(token: AccessToken) -> str:
    minutes = max(0, int(token.remaining.total_seconds() // 60))
    return f"expires in {minutes} min"
