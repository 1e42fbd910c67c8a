"""What went wrong talking to a mailbox's SMTP server, in words an admin can act on.

This is the one place where a failed SMTP exchange is classified. The send
test prints the result and the outbox stores it as a reply's delivery state,
so the help page's promise ("authentication", "TLS/SSL", "connection", …)
holds in both. The server's own text is always kept verbatim: it is often the
only thing that tells an admin the provider wants an app password.

Classified failures join the project's error tree::

    TempFail ── SmtpTempFail   connection trouble and 4xx answers: the outbox retries
    PermFail ── SmtpPermFail   authentication, TLS, 5xx answers: the outbox stops at once
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib

from policy.config.model import Config
from policy.config.sending import SmtpConfig
from policy.errors import FirstlineError, PermFail, TempFail


class Step(StrEnum):
    TOKEN = "token"  # noqa: S105 (the step, not a secret)
    CONNECT = "connect"
    STARTTLS = "starttls"
    LOGIN = "login"
    SENDER = "sender"
    RECIPIENT = "recipient"
    DATA = "data"


class Kind(StrEnum):
    AUTHENTICATION = "authentication"
    TLS = "tls"
    CONNECTION = "connection"
    SENDER = "sender rejected"
    RECIPIENT = "recipient rejected"
    REJECTED = "message rejected"


@dataclass(frozen=True)
class Diagnosis:
    step: Step
    kind: Kind
    temporary: bool
    # The server's words (or the TLS/socket library's), never rewritten.
    server_text: str
    hint: str
    code: int | None = None
    # When no server spoke (code is None): what happened, in our words.
    happened: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        when = "temporary" if self.temporary else "permanent"
        return f"{self.step} failed ({self.kind}, {when}): {self.server_text} — {self.hint}"


class SmtpFailure(FirstlineError):
    """A classified SMTP failure; ``diagnosis`` says which step, what class and why."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis
        super().__init__(str(diagnosis))


class SmtpTempFail(SmtpFailure, TempFail):
    """Worth trying again later."""


class SmtpPermFail(SmtpFailure, PermFail):
    """Trying again will fail the same way until someone changes something."""


def failure(diagnosis: Diagnosis) -> SmtpFailure:
    return SmtpTempFail(diagnosis) if diagnosis.temporary else SmtpPermFail(diagnosis)


_AUTH_WORDS = re.compile(r"oauth|credential|password|authenticat", re.I)
_TLS_WORDS = re.compile(r"\bssl\b|\btls\b|starttls|encryption required", re.I)
# What OpenSSL says when the other side answered a TLS hello with plain text.
_PLAIN_TEXT_REPLY = re.compile(r"wrong.version.number|record.layer.failure|unknown.protocol", re.I)

HINT_AUTH = "check the account and password, or whether the provider needs an app password or OAuth"
HINT_OAUTH = (
    "the server refused the OAuth token: check that account is the mailbox the token "
    "is for and that the app may send as it"
)
HINT_SMTP_AUTH_DISABLED = (
    "SMTP AUTH is disabled for the tenant or this mailbox: in Exchange Online enable it for "
    "the mailbox (Set-CASMailbox ADDRESS -SmtpClientAuthenticationDisabled $false) or the "
    "tenant (Set-TransportConfig -SmtpClientAuthenticationDisabled $false)"
)
HINT_WRONG_ACCOUNT = (
    "the token is not good for this account: account must be the mailbox the token was "
    "issued for; for the app flow, register the app in Exchange (New-ServicePrincipal) and "
    "give it the mailbox (Add-MailboxPermission ADDRESS -User SERVICE_ID -AccessRights FullAccess)"
)
HINT_RELOGIN = "the refresh token was revoked or has expired: run `firstline oauth login MAILBOX`"
HINT_CLOCK = "this host's clock is off (the assertion is outside its valid time): check NTP"
# (the provider's words, the hint); the first that matches wins.
_TOKEN_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), hint)
    for pattern, hint in (
        (
            r"invalid_key",
            "the certificate or service account key cannot be used: it must be the PEM "
            "(private key and certificate) or the JSON key file as the provider issued it",
        ),
        (
            r"AADSTS7000215|AADSTS7000222|invalid client secret",
            "the client secret is wrong or expired: use the secret's Value (not its ID) "
            "from the app's Certificates & secrets, or create a new one",
        ),
        (
            r"AADSTS700016|AADSTS90002|not found in the directory|tenant .* not found",
            "the app (client_id) or the tenant is not found: check client_id and tenant, "
            "and that the app is registered in (or consented to by) that tenant",
        ),
        (
            r"AADSTS65001|AADSTS650052|AADSTS500011|consent",
            "an admin has not granted consent: API permissions → Office 365 Exchange Online → "
            "SMTP.SendAsApp (app) or SMTP.Send (delegated), then Grant admin consent",
        ),
        (r"AADSTS700024|AADSTS500133|iat and exp|valid time range|clock", HINT_CLOCK),
        (
            r"AADSTS700027|AADSTS700023|certificate",
            "the certificate is not the one registered for the app: upload it under "
            "Certificates & secrets",
        ),
        (
            r"AADSTS70008|AADSTS700082|AADSTS700084|AADSTS50173|AADSTS50076|expired or revoked"
            r"|no refresh token",
            HINT_RELOGIN,
        ),
        (
            r"unauthorized_client|not authorized for any of the scopes",
            "the client may not use this grant or scope: for a Google service account, add its "
            "client ID with scope https://mail.google.com/ under Security → API controls → "
            "Domain-wide delegation in the Admin console",
        ),
        (r"invalid_client", "the client is not recognised: check client_id and client_secret"),
        (r"invalid_scope", "the scope is not valid for this client: check scope"),
        (r"invalid_grant", "the grant was refused: check the credentials and the account"),
    )
)
HINT_TLS = "check the server name, port and encryption method"
HINT_CONNECTION = "check the server location (host name) and port"


def swap_hint(
    smtp: SmtpConfig, *, plain_text_server: bool = False, tls_server: bool = False
) -> str:
    """Name the usual mistake when port and encryption method look swapped."""
    if smtp.encryption == "ssl" and (smtp.port == 587 or plain_text_server):
        return (
            f"port {smtp.port} answers in plain text, as STARTTLS ports (usually 587) do, "
            "but encryption is 'ssl' (implicit TLS, usually 465): try encryption: starttls"
        )
    if smtp.encryption != "ssl" and (smtp.port == 465 or tls_server):
        return (
            f"port {smtp.port} expects implicit TLS, as port 465 usually does, "
            f"but encryption is '{smtp.encryption}': try encryption: ssl"
        )
    return ""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _certificate_hint(error: BaseException, smtp: SmtpConfig) -> str:
    if not isinstance(error, ssl.SSLCertVerificationError):
        return ""
    if "mismatch" in str(error):
        return (
            f"the certificate is not valid for {smtp.host!r}: use the name the certificate is for"
        )
    if smtp.ca_file is None:
        return "the certificate is not trusted: if the server uses a private CA, set ca_file"
    return f"the certificate is not signed by the CA in {smtp.ca_file}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_PROVIDER_TEXT = 1000


def _bounded(text: str) -> str:
    """A provider's words on one line and of bounded length: they go to logs and terminals."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _MAX_PROVIDER_TEXT else text[:_MAX_PROVIDER_TEXT] + "…"


def token_diagnosis(
    smtp: SmtpConfig,
    error: str,
    description: str,
    status: int | None,
    *,
    exc: BaseException | None = None,
) -> Diagnosis:
    """A token request that failed: the provider's error and description, and what to do.

    An unreachable or failing (5xx) token endpoint is temporary; an OAuth
    error answer is the credentials' fault and waits for an admin.
    """
    text = _bounded(f"{error}: {description}" if error and description else (error or description))
    if exc is not None:
        where = urlsplit(smtp.auth.endpoint).hostname or smtp.auth.endpoint
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return Diagnosis(Step.TOKEN, Kind.TLS, False, text, f"check the certificate of {where}")
        return Diagnosis(
            Step.TOKEN, Kind.CONNECTION, True, text, f"the token endpoint {where} is not reachable"
        )
    if (status is not None and status >= 500) or error == "temporarily_unavailable":
        return Diagnosis(
            Step.TOKEN, Kind.CONNECTION, True, text, "the token endpoint has trouble: try later"
        )
    hint = next((h for pattern, h in _TOKEN_HINTS if pattern.search(text)), "")
    hint = hint or "the identity provider refused the credentials: check the auth section"
    return Diagnosis(Step.TOKEN, Kind.AUTHENTICATION, False, text, hint)


def _auth_hint(code: int, message: str, smtp: SmtpConfig) -> str:
    if not smtp.oauth:
        return HINT_AUTH
    if "5.7.139" in message:
        return HINT_SMTP_AUTH_DISABLED
    if "5.7.3" in message or code == 535:
        return HINT_WRONG_ACCOUNT
    return HINT_OAUTH


def diagnose(
    exc: BaseException, step: Step, smtp: SmtpConfig, *, tls_server: bool = False
) -> Diagnosis:
    """Classify one failure; ``tls_server`` says a probe found TLS where we expected text."""
    response = _find(exc, aiosmtplib.SMTPResponseException)
    if isinstance(response, aiosmtplib.SMTPResponseException):
        return _diagnose_reply(response.code, response.message, step, smtp)
    text = str(exc) or type(exc).__name__
    return replace(_diagnose_silence(exc, text, step, smtp, tls_server=tls_server),
                   happened=_what_happened(exc, step, smtp))  # fmt: skip


def _what_happened(exc: BaseException, step: Step, smtp: SmtpConfig) -> str:
    """A failure no server put into words: say what it was, not "server said"."""
    where = f"{smtp.host}:{smtp.port}"
    if _find(exc, socket.gaierror) is not None:
        return f"the host name {smtp.host!r} could not be resolved (DNS): no server was reached"
    if _find(exc, ConnectionRefusedError) is not None:
        return f"nothing is listening on {where}: the connection was refused"
    if _find(exc, TimeoutError) is not None or _find(exc, aiosmtplib.SMTPTimeoutError):
        return f"{where} did not answer within {smtp.timeout:g} seconds"
    if _find(exc, ssl.SSLError) is not None:
        return f"the TLS negotiation with {where} failed before any SMTP reply"
    if _find(exc, aiosmtplib.SMTPServerDisconnected) is not None:
        return f"{where} closed the connection without an SMTP reply"
    return f"the {step} step failed before {where} answered"


def _diagnose_silence(
    exc: BaseException, text: str, step: Step, smtp: SmtpConfig, *, tls_server: bool
) -> Diagnosis:
    tls_error = _find(exc, ssl.SSLError)
    if tls_error is not None:
        plain = bool(_PLAIN_TEXT_REPLY.search(str(tls_error)))
        hint = _joined(
            HINT_TLS, _certificate_hint(tls_error, smtp), swap_hint(smtp, plain_text_server=plain)
        )
        return Diagnosis(step, Kind.TLS, False, str(tls_error), hint)
    if tls_server:
        hint = _joined(
            "the server accepted the connection but sent no greeting and speaks TLS",
            swap_hint(smtp, tls_server=True),
        )
        return Diagnosis(step, Kind.TLS, False, text, hint)
    if _TLS_WORDS.search(text):
        return Diagnosis(step, Kind.TLS, False, text, _joined(HINT_TLS, swap_hint(smtp)))
    if step is Step.LOGIN:
        hint = HINT_OAUTH if smtp.oauth else HINT_AUTH
        return Diagnosis(step, Kind.AUTHENTICATION, False, text, hint)
    not_found = _find(exc, socket.gaierror)
    if not_found is not None:
        return Diagnosis(
            step,
            Kind.CONNECTION,
            True,
            text,
            f"the host name {smtp.host!r} was not found; {HINT_CONNECTION}",
        )
    return Diagnosis(step, Kind.CONNECTION, True, text, _joined(HINT_CONNECTION, swap_hint(smtp)))


def _diagnose_reply(code: int, message: str, step: Step, smtp: SmtpConfig) -> Diagnosis:
    text = f"{code} {message}"
    temporary = 400 <= code < 500
    if code in (534, 535) or (step is Step.LOGIN and not _TLS_WORDS.search(message)):
        hint = _auth_hint(code, message, smtp)
        return Diagnosis(step, Kind.AUTHENTICATION, temporary, text, hint, code)
    if code == 538 or _TLS_WORDS.search(message):
        return Diagnosis(step, Kind.TLS, temporary, text, _joined(HINT_TLS, swap_hint(smtp)), code)
    if _AUTH_WORDS.search(message):
        return Diagnosis(step, Kind.AUTHENTICATION, temporary, text, HINT_AUTH, code)
    if step is Step.SENDER:
        hint = (
            "the server refused the sender: check that the account may send as the mailbox address"
        )
        return Diagnosis(step, Kind.SENDER, temporary, text, hint, code)
    if step is Step.RECIPIENT:
        hint = "the server refused the recipient: check the address"
        return Diagnosis(step, Kind.RECIPIENT, temporary, text, hint, code)
    if temporary:
        return Diagnosis(
            step, Kind.REJECTED, True, text, "the server asks to try again later", code
        )
    return Diagnosis(step, Kind.REJECTED, False, text, "the server refused the message", code)


def smtp_warnings(config: Config) -> list[str]:
    """What ``check-config`` should point out about the mailboxes' relays, one line each."""
    warnings: list[str] = []
    for index, mailbox in enumerate(config.mailboxes):
        smtp = mailbox.smtp
        if smtp is None:
            continue
        where = f"mailboxes[{index}].smtp ({mailbox.address})"
        if smtp.encryption == "none":
            what = "replies and the password cross" if smtp.password else "replies cross"
            warnings.append(
                f"{where}: encryption is 'none': {what} the network in plain text; use it "
                "only for a relay on the local network"
            )
        swapped = swap_hint(smtp)
        if swapped:
            warnings.append(f"{where}: {swapped}")
        key_file = smtp.dkim.key_file if smtp.dkim is not None else None
        files = [
            ("ca_file", smtp.ca_file),
            ("dkim.key_file", key_file),
            ("auth.ca_file", smtp.auth.ca_file),
        ]
        for name, path in files:
            if path is not None and not os.access(path, os.R_OK):
                warnings.append(f"{where}: {name} {path} cannot be read: replies will fail")
    return warnings
