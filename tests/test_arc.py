"""ARC: chain validation, sealers' domains and the DMARC result they recorded."""

from __future__ import annotations

import dkim

from ingest.smtp.resolver import CachingResolver
from policy.message.headerblock import read
from policy.verify.arc import NOT_ARC_SIGNED, ArcResult, verify_arc
from policy.verify.dkim import fetch_keys, key_names
from tests.support.dnsserver import DnsServer
from tests.support.signing import Signer, message


async def check(server: DnsServer, raw: bytes) -> ArcResult:
    keys = await fetch_keys(
        CachingResolver([server.address], timeout=2.0), key_names(read(raw).fields)
    )
    return verify_arc(read(raw), keys, 1024)


def arrive(raw: bytes, authserv_id: str, dmarc: str) -> bytes:
    """What a receiving forwarder writes before it seals (arc= once there is a chain)."""
    arc = " arc=pass;" if b"ARC-Seal:" in raw else ""
    results = (
        f"Authentication-Results: {authserv_id};{arc} dkim=pass header.d=example.com;"
        f" spf=pass smtp.mailfrom=example.com; dmarc={dmarc} header.from=example.com\r\n"
    )
    return results.encode() + raw


def forward_with_footer(raw: bytes) -> bytes:
    return raw + b"\r\n-- \r\nThis message was forwarded by the Example mail service.\r\n"


async def test_no_arc_sets_is_none(dns_server: DnsServer) -> None:
    result = await check(dns_server, message())
    assert (result.cv, result.sealers, result.sealer_dmarc) == ("none", (), None)
    # Answered without dkimpy, as dkimpy answers it.
    assert dkim.ARC(message()).verify() == (dkim.CV_None, [], result.reason)
    assert result.reason == NOT_ARC_SIGNED


async def test_sealed_then_modified_by_the_sealer_passes(dns_server: DnsServer) -> None:
    Signer("example.com").publish(dns_server)
    sealer = Signer("forwarder.example", "arc").publish(dns_server)
    original = Signer("example.com").sign(message())
    sealed = sealer.seal(
        forward_with_footer(arrive(original, "mx.forwarder.example", "pass")),
        "mx.forwarder.example",
    )
    result = await check(dns_server, sealed)
    assert result.cv == "pass"
    assert result.sealers == ("forwarder.example",)
    assert result.newest_sealer == "forwarder.example"
    assert (result.sealer_dmarc, result.sealer_dmarc_from) == ("pass", "example.com")
    assert result.instances == 1


async def test_two_hops_report_both_sealers_newest_first(dns_server: DnsServer) -> None:
    first = Signer("first.example", "arc").publish(dns_server)
    second = Signer("second.example", "arc").publish(dns_server)
    raw = first.seal(arrive(message(), "mx.first.example", "pass"), "mx.first.example")
    raw = second.seal(arrive(raw, "mx.second.example", "fail"), "mx.second.example")
    result = await check(dns_server, raw)
    assert result.cv == "pass"
    assert result.sealers == ("second.example", "first.example")
    assert result.sealer_dmarc == "fail"


async def test_modified_after_sealing_fails(dns_server: DnsServer) -> None:
    sealer = Signer("forwarder.example", "arc").publish(dns_server)
    sealed = sealer.seal(arrive(message(), "mx.forwarder.example", "pass"), "mx.forwarder.example")
    result = await check(dns_server, forward_with_footer(sealed))
    assert result.cv == "fail"


async def test_seal_by_a_key_not_published_by_the_sealer_fails(dns_server: DnsServer) -> None:
    impostor_key = Signer("impostor.example", "arc").keypair()[1]
    dns_server.add("arc._domainkey.forwarder.example", "TXT", impostor_key)
    sealer = Signer("forwarder.example", "arc")
    sealed = sealer.seal(arrive(message(), "mx.forwarder.example", "pass"), "mx.forwarder.example")
    result = await check(dns_server, sealed)
    assert result.cv == "fail"
    assert result.sealers == ("forwarder.example",)
