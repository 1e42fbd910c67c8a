"""Verification at SMTP time, end to end: real SMTP in, loopback DNS, stored rows out."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from email.parser import BytesHeaderParser

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.cli.serve import serve_verifier
from ingest.ops.metrics import REGISTRY
from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from policy.verify.authenticate import Authenticator
from storage.models import QueueEntry, Rejection, StoredMessage
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.signing import Signer, message

SENDER = "alice@customer.example"


def verifying(
    make_config: Callable[..., Config], dns_server: DnsServer, timeout: float = 2.0
) -> AbstractContextManager[ServerThread]:
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": timeout})
    return running(config, verifier_factory=configured_verifier)


@pytest.fixture
def verifying_server(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> Iterator[ServerThread]:
    with verifying(make_config, dns_server) as server:
        yield server


def publish(server: DnsServer, dmarc: str, spf: str = "v=spf1 -all") -> Signer:
    server.add("customer.example", "TXT", spf)
    server.add("_dmarc.customer.example", "TXT", dmarc)
    return Signer("customer.example").publish(server)


def send(server: ServerThread, raw: bytes, mail_from: str = SENDER) -> tuple[int, str]:
    with server.smtp() as client:
        client.ehlo("mx.customer.example")
        try:
            code, reply = client.sendmail(mail_from, ["support@example.com"], raw), b""
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        assert code == {}
        return 250, reply.decode()


def stored(server: ServerThread) -> list[tuple[StoredMessage, QueueEntry]]:
    with Session(server.engine) as session:
        rows = session.execute(
            select(StoredMessage, QueueEntry).join(
                QueueEntry,
                QueueEntry.message_id == StoredMessage.id,  # type: ignore[arg-type]
            )
        )
        return [(m, e) for m, e in rows]


def rejections(server: ServerThread) -> list[Rejection]:
    server.flush()
    with Session(server.engine) as session:
        return list(session.scalars(select(Rejection)))


def our_results(raw: bytes) -> list[str]:
    """Every Authentication-Results field claiming our authserv-id, unfolded."""
    headers = BytesHeaderParser().parsebytes(raw)
    values = [" ".join(str(v).split()) for v in headers.get_all("Authentication-Results") or []]
    return [v for v in values if v.lower().startswith("mx.firstline.test;")]


def customer_message(subject: str = "Printer on fire") -> bytes:
    return message(sender=f"Alice <{SENDER}>", to="support@example.com", subject=subject)


def test_dmarc_reject_is_refused_with_550(
    verifying_server: ServerThread, dns_server: DnsServer
) -> None:
    publish(dns_server, "v=DMARC1; p=reject")
    code, text = send(verifying_server, customer_message())
    assert code == 550
    assert text == (
        "5.7.1 Unauthenticated email from customer.example is not accepted due to domain's "
        "DMARC policy. Please contact the administrator of customer.example domain."
    )
    assert stored(verifying_server) == []
    [rejection] = rejections(verifying_server)
    assert (rejection.stage, rejection.reason) == ("DATA", "dmarc_reject")
    assert rejection.reply == f"550 {text}"
    assert rejection.authentication["dmarc"]["result"] == "fail"


def test_dmarc_quarantine_is_stored_quarantined(
    verifying_server: ServerThread, dns_server: DnsServer
) -> None:
    publish(dns_server, "v=DMARC1; p=quarantine")
    assert send(verifying_server, customer_message())[0] == 250
    [(stored_message, entry)] = stored(verifying_server)
    assert entry.state == "quarantined"
    assert stored_message.verdict["reason"] == "dmarc_quarantine"


def test_dmarc_none_is_accepted_and_recorded(
    verifying_server: ServerThread, dns_server: DnsServer
) -> None:
    publish(dns_server, "v=DMARC1; p=none")
    forged = (
        b"Authentication-Results: mx.firstline.test; dmarc=pass header.from=customer.example\r\n"
        + customer_message()
    )
    assert send(verifying_server, forged)[0] == 250
    [(stored_message, entry)] = stored(verifying_server)
    assert entry.state == "queued"
    assert stored_message.raw is not None
    [ours] = our_results(stored_message.raw)
    assert "dmarc=fail (p=none dis=none) header.from=customer.example" in ours
    assert b"dmarc=pass header.from" not in stored_message.raw
    assert stored_message.authentication_results is not None
    assert "spf=fail smtp.mailfrom=customer.example" in stored_message.authentication_results
    assert stored_message.verdict["dmarc"]["result"] == "fail"
    assert stored_message.forwarding == "direct"


def test_signed_native_forward_is_accepted_with_its_kind(
    verifying_server: ServerThread, dns_server: DnsServer
) -> None:
    signer = publish(dns_server, "v=DMARC1; p=reject")
    dns_server.add("forwarder.example", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    raw = b"X-Forwarded-To: support@example.com\r\n" + signer.sign(customer_message())
    srs = "SRS0=Ab12=TT=customer.example=alice@forwarder.example"
    assert send(verifying_server, raw, mail_from=srs)[0] == 250
    [(stored_message, entry)] = stored(verifying_server)
    assert (entry.state, stored_message.forwarding) == ("queued", "native")
    assert stored_message.raw is not None
    [ours] = our_results(stored_message.raw)
    assert "dkim=pass header.d=customer.example" in ours
    assert "dmarc=pass header.from=customer.example" in ours


def test_dns_timeout_is_a_451(make_config: Callable[..., Config], dns_server: DnsServer) -> None:
    publish(dns_server, "v=DMARC1; p=reject")
    dns_server.timeout("_dmarc.customer.example")
    with verifying(make_config, dns_server, timeout=0.3) as server:
        code, text = send(server, customer_message())
        assert code == 451
        assert text.startswith("4.7.0 ")
        assert stored(server) == []
        assert [r.reason for r in rejections(server)] == ["dns_tempfail"]


def dns_metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_serve_verifier_uses_the_pool_and_counts_dns(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    signer = publish(dns_server, "v=DMARC1; p=reject", "v=spf1 ip4:127.0.0.1 -all")
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 2.0})
    built: list[Authenticator] = []

    def factory(config: Config, sampling_key: bytes) -> Authenticator:
        verifier = serve_verifier(config, sampling_key)
        assert verifier is not None
        built.append(verifier)
        return verifier

    lookups = dns_metric("firstline_dns_lookups_total", type="TXT")
    hits = dns_metric("firstline_dns_cache_hits_total")
    try:
        with running(config, verifier_factory=factory) as server:
            for subject in ("first", "second"):
                assert send(server, signer.sign(customer_message(subject)))[0] == 250
            rows = stored(server)
    finally:
        for verifier in built:
            verifier.close()
    assert [m.verdict["reason"] for m, _entry in rows] == ["accepted", "accepted"]
    assert rows[0][0].verdict["dkim"][0]["result"] == "pass"
    # SPF, DMARC and the key were asked once; the second message hit the cache.
    assert dns_metric("firstline_dns_lookups_total", type="TXT") - lookups >= 3
    assert dns_metric("firstline_dns_cache_hits_total") - hits >= 2
