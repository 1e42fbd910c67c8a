"""The classification table on what real providers answer (texts as they send them)."""

from __future__ import annotations

import socket

import aiosmtplib
import pytest

from ingest.outbound.smtpfail import Kind, Step, diagnose, swap_hint
from policy.config.sending import SmtpConfig

SMTP = SmtpConfig(host="smtp.example.com", port=587, encryption="starttls")


@pytest.mark.parametrize(
    ("step", "code", "message", "kind", "temporary"),
    [
        # Gmail without an app password; Microsoft 365 with SMTP AUTH switched off.
        (Step.LOGIN, 534, "5.7.9 Application-specific password required.",
         Kind.AUTHENTICATION, False),
        (Step.LOGIN, 535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
         "disabled for the Tenant.", Kind.AUTHENTICATION, False),
        (Step.LOGIN, 454, "4.7.0 Temporary authentication failure", Kind.AUTHENTICATION, True),
        (Step.SENDER, 530, "5.7.0 Authentication Required", Kind.AUTHENTICATION, False),
        (Step.SENDER, 550, "5.7.60 SMTP; Client does not have permissions to send as this "
         "sender", Kind.SENDER, False),
        (Step.SENDER, 530, "5.7.0 Must issue a STARTTLS command first", Kind.TLS, False),
        (Step.LOGIN, 538, "5.7.11 Encryption required for requested authentication mechanism",
         Kind.TLS, False),
        (Step.RECIPIENT, 550, "5.1.1 The email account that you tried to reach does not exist",
         Kind.RECIPIENT, False),
        (Step.RECIPIENT, 452, "4.2.2 The email account that you tried to reach is over quota",
         Kind.RECIPIENT, True),
        (Step.DATA, 554, "5.7.1 Message rejected as spam", Kind.REJECTED, False),
        (Step.DATA, 451, "4.7.500 Server busy. Please try again later", Kind.REJECTED, True),
        (Step.CONNECT, 421, "4.7.0 Too many concurrent SMTP connections", Kind.REJECTED, True),
    ],
)  # fmt: skip
def test_server_answers_are_classified(
    step: Step, code: int, message: str, kind: Kind, temporary: bool
) -> None:
    d = diagnose(aiosmtplib.SMTPResponseException(code, message), step, SMTP)
    assert (d.kind, d.temporary, d.code) == (kind, temporary, code)
    assert d.server_text == f"{code} {message}"
    assert d.hint


def test_unknown_host_name_is_connection_and_says_so() -> None:
    error = aiosmtplib.SMTPConnectError("Error connecting to smtp.example.com on port 587")
    error.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    d = diagnose(error, Step.CONNECT, SMTP)
    assert (d.kind, d.temporary) == (Kind.CONNECTION, True)
    assert "'smtp.example.com' was not found" in d.hint


def test_timeout_is_connection_and_temporary() -> None:
    error = aiosmtplib.SMTPConnectTimeoutError("Timed out connecting to smtp.example.com")
    d = diagnose(error, Step.CONNECT, SMTP)
    assert (d.kind, d.temporary) == (Kind.CONNECTION, True)


@pytest.mark.parametrize(
    ("port", "encryption", "expected"),
    [
        (587, "ssl", "try encryption: starttls"),
        (465, "starttls", "try encryption: ssl"),
        (465, "none", "try encryption: ssl"),
        (587, "starttls", ""),
        (465, "ssl", ""),
        (2525, "starttls", ""),
    ],
)
def test_swap_hint_by_port(port: int, encryption: str, expected: str) -> None:
    smtp = SmtpConfig.model_validate({"host": "h", "port": port, "encryption": encryption})
    hint = swap_hint(smtp)
    assert (expected in hint) if expected else hint == ""
