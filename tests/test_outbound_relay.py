"""Sending through a real loopback relay, and how each failure is classified."""

from __future__ import annotations

import email
import os
import time
from email import policy
from pathlib import Path

import pytest
import trustme

from ingest.outbound.relay import Relay, StepDone, tls_context
from ingest.outbound.smtpfail import Kind, SmtpFailure, SmtpPermFail, SmtpTempFail, Step
from policy.config.sending import SmtpConfig
from policy.errors import PermFail, TempFail
from tests.support.relay import PASSWORD, RecordingHandler, Relays, free_port

MESSAGE = (
    b"From: support@example.com\r\nTo: customer@example.net\r\n"
    b"Subject: hello\r\n\r\nA line.\r\n.leading dot\r\n"
)


async def send(smtp: SmtpConfig, steps: list[StepDone] | None = None) -> str:
    async with Relay(smtp, "firstline.test", steps.append if steps is not None else None) as r:
        delivered = await r.send("support@example.com", ["customer@example.net"], MESSAGE)
    return delivered.reply


async def failing(smtp: SmtpConfig) -> SmtpFailure:
    with pytest.raises(SmtpFailure) as caught:
        await send(smtp)
    return caught.value


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_delivers_through_each_encryption(relays: Relays, mode: str) -> None:
    port, handler = relays.start(mode)  # type: ignore[arg-type]
    steps: list[StepDone] = []
    reply = await send(relays.config(port, mode), steps)
    assert reply.startswith("250 2.0.0 Ok: queued as Q1ABC")
    [received] = handler.received
    assert received.mail_from == "support@example.com"
    assert received.rcpt_tos == ("customer@example.net",)
    parsed = email.message_from_bytes(received.data, policy=policy.default)
    assert parsed.get_content().splitlines() == ["A line.", ".leading dot"]
    expected = [Step.CONNECT, Step.LOGIN, Step.SENDER, Step.RECIPIENT, Step.DATA]
    if mode == "starttls":
        expected[1:1] = [Step.STARTTLS, Step.STARTTLS]
    assert [s.step for s in steps] == expected
    assert steps[0].reply.startswith("220 ")


async def test_no_encryption_sends_in_plain_text_to_a_local_relay(relays: Relays) -> None:
    port, handler = relays.start("plain")
    steps: list[StepDone] = []
    await send(relays.config(port, "none"), steps)
    assert [s.step for s in steps] == [
        Step.CONNECT, Step.LOGIN, Step.SENDER, Step.RECIPIENT, Step.DATA
    ]  # fmt: skip
    assert len(handler.received) == 1


async def test_wrong_password_is_authentication(relays: Relays) -> None:
    port, handler = relays.start("starttls")
    error = await failing(relays.config(port, password="wrong"))
    assert isinstance(error, SmtpPermFail) and isinstance(error, PermFail)
    d = error.diagnosis
    assert (d.step, d.kind, d.code) == (Step.LOGIN, Kind.AUTHENTICATION, 535)
    assert d.server_text == "535 5.7.8 Authentication credentials invalid"
    assert "app password" in d.hint
    assert handler.received == []


async def test_implicit_tls_against_starttls_port_hints_the_swap(relays: Relays) -> None:
    port, _ = relays.start("starttls")
    d = (await failing(relays.config(port, "ssl"))).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.CONNECT, Kind.TLS, False)
    assert "try encryption: starttls" in d.hint


async def test_starttls_against_implicit_tls_port_hints_the_swap(relays: Relays) -> None:
    port, _ = relays.start("ssl")
    d = (await failing(relays.config(port, "starttls", timeout=0.5))).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.CONNECT, Kind.TLS, False)
    assert "try encryption: ssl" in d.hint


async def test_certificate_for_another_host_is_tls(relays: Relays) -> None:
    port, handler = relays.start("ssl", cert_for="mail.other.example")
    d = (await failing(relays.config(port, "ssl"))).diagnosis
    assert (d.step, d.kind) == (Step.CONNECT, Kind.TLS)
    assert "certificate" in d.server_text.lower()
    assert "server name" in d.hint and "not valid for '127.0.0.1'" in d.hint
    assert handler.received == []


async def test_untrusted_certificate_is_tls_without_the_mailbox_ca(relays: Relays) -> None:
    port, _ = relays.start("starttls")
    d = (await failing(relays.config(port, ca_file=None))).diagnosis
    assert (d.step, d.kind) == (Step.STARTTLS, Kind.TLS)
    assert "CERTIFICATE_VERIFY_FAILED" in d.server_text
    assert "set ca_file" in d.hint


async def test_unreadable_ca_file_is_tls_before_connecting(relays: Relays) -> None:
    port, handler = relays.start("starttls")
    error = await failing(relays.config(port, ca_file=relays.ca_file.with_name("absent.pem")))
    d = error.diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.CONNECT, Kind.TLS, False)
    assert "absent.pem" in d.server_text and "ca_file" in d.hint
    assert handler.data_attempts == 0


async def test_server_without_starttls_is_never_used_in_plain_text(relays: Relays) -> None:
    port, handler = relays.start("plain")
    error = await failing(relays.config(port, "starttls"))
    d = error.diagnosis
    assert (d.step, d.kind) == (Step.STARTTLS, Kind.TLS)
    assert "does not offer STARTTLS" in d.server_text
    assert handler.received == []


async def test_nothing_listening_is_connection_and_temporary(relays: Relays) -> None:
    error = await failing(relays.config(free_port()))
    assert isinstance(error, SmtpTempFail) and isinstance(error, TempFail)
    d = error.diagnosis
    assert (d.step, d.kind) == (Step.CONNECT, Kind.CONNECTION)
    assert "host name" in d.hint and "port" in d.hint


async def test_550_at_data_is_permanent_with_the_server_text(relays: Relays) -> None:
    handler = RecordingHandler(data_replies=["550 5.7.1 Message refused by policy"])
    port, _ = relays.start("starttls", handler=handler)
    error = await failing(relays.config(port))
    assert isinstance(error, SmtpPermFail)
    assert error.diagnosis.step is Step.DATA
    assert error.diagnosis.server_text == "550 5.7.1 Message refused by policy"


async def test_451_is_temporary(relays: Relays) -> None:
    handler = RecordingHandler(data_replies=["451 4.3.0 Try again later"])
    port, _ = relays.start("starttls", handler=handler)
    error = await failing(relays.config(port))
    assert isinstance(error, SmtpTempFail)
    assert error.diagnosis.code == 451


async def test_refused_recipient_is_named(relays: Relays) -> None:
    handler = RecordingHandler(rcpt_replies=["550 5.1.1 <customer@example.net>: no such user"])
    port, _ = relays.start("starttls", handler=handler)
    d = (await failing(relays.config(port))).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.RECIPIENT, Kind.RECIPIENT, False)
    assert "no such user" in d.server_text


async def test_password_never_in_the_failure(relays: Relays) -> None:
    port, _ = relays.start("starttls")
    error = await failing(relays.config(port, password=PASSWORD + "x"))
    assert PASSWORD not in str(error) and PASSWORD not in repr(error.diagnosis)


def test_a_ca_file_is_loaded_once_and_again_when_it_changes(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    smtp = SmtpConfig(host="smtp.example.com", port=587, encryption="starttls", ca_file=ca_file)
    first = tls_context(smtp)
    assert tls_context(smtp) is first  # not parsed again for every connection
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # renewed
    os.utime(ca_file, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    renewed = tls_context(smtp)
    assert renewed is not first and len(renewed.get_ca_certs()) == 1
