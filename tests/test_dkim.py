"""DKIM: every signature verified, with keys fetched through the loopback DNS."""

from __future__ import annotations

from base64 import b64encode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ingest.smtp.resolver import CachingResolver
from policy.errors import DnsTempError
from policy.message.headerblock import read
from policy.verify.dkim import fetch_keys, key_names, verify_dkim
from tests.support.dnsserver import DnsServer
from tests.support.signing import Signer, message


async def verify(
    server: DnsServer, raw: bytes, min_key_bits: int = 1024, dns_timeout: float = 2.0
) -> list:
    resolver = CachingResolver([server.address], timeout=dns_timeout)
    keys = await fetch_keys(resolver, key_names(read(raw).fields))
    return verify_dkim(read(raw), keys, min_key_bits)


async def test_rsa_signature_passes(dns_server: DnsServer) -> None:
    raw = Signer("example.com").publish(dns_server).sign(message())
    (signature,) = await verify(dns_server, raw)
    assert (signature.domain, signature.selector, signature.algorithm) == (
        "example.com",
        "sel",
        "rsa-sha256",
    )
    assert (signature.result, signature.key_bits) == ("pass", 1024)
    assert len(signature.header_b) == 8


async def test_ed25519_signature_passes(dns_server: DnsServer) -> None:
    signer = Signer("example.com", "ed", "ed25519-sha256").publish(dns_server)
    (signature,) = await verify(dns_server, signer.sign(message()))
    assert (signature.algorithm, signature.result) == ("ed25519-sha256", "pass")


async def test_modified_body_fails(dns_server: DnsServer) -> None:
    raw = Signer("example.com").publish(dns_server).sign(message())
    raw += b"--\r\nSent through the forwarder. Have a nice day.\r\n"
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "fail"
    assert "body hash" in signature.reason


async def test_modified_header_fails(dns_server: DnsServer) -> None:
    raw = Signer("example.com").publish(dns_server).sign(message())
    raw = raw.replace(b"Subject: Printer on fire", b"Subject: [EXTERNAL] Printer on fire")
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "fail"


async def test_ed25519_with_modified_header_fails(dns_server: DnsServer) -> None:
    signer = Signer("example.com", "ed", "ed25519-sha256").publish(dns_server)
    raw = signer.sign(message()).replace(b"Printer on fire", b"Printer fixed")
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "fail"


async def test_every_signature_is_verified(dns_server: DnsServer) -> None:
    first = Signer("esp.example").publish(dns_server)
    second = Signer("example.com", "s2", "ed25519-sha256").publish(dns_server)
    # The topmost signature is broken (its key is wrong), the second is good.
    raw = first.sign(second.sign(message()))
    dns_server.remove("sel._domainkey.esp.example")
    dns_server.add("sel._domainkey.esp.example", "TXT", Signer("other.example").keypair()[1])
    results = await verify(dns_server, raw)
    assert [(s.domain, s.result) for s in results] == [
        ("esp.example", "fail"),
        ("example.com", "pass"),
    ]


async def test_key_under_the_minimum_fails(dns_server: DnsServer) -> None:
    raw = Signer("example.com", "weak", bits=768).publish(dns_server).sign(message())
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "fail"
    assert "too small" in signature.reason
    # The same signature is cryptographically fine: a lower minimum accepts it.
    (lenient,) = await verify(dns_server, raw, min_key_bits=512)
    assert lenient.result == "pass"


async def test_missing_key_and_malformed_signature_are_permerrors(dns_server: DnsServer) -> None:
    raw = Signer("nokey.example").sign(message())
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "permerror"
    assert "no key" in signature.reason
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; garbage\r\n" + message()
    (malformed,) = await verify(dns_server, broken)
    assert malformed.result == "permerror"


async def test_rsa_sha1_is_not_accepted(dns_server: DnsServer) -> None:
    raw = Signer("example.com", algorithm="rsa-sha1").publish(dns_server).sign(message())
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "fail"
    assert "RFC 8301" in signature.reason


async def test_key_among_several_txt_records(dns_server: DnsServer) -> None:
    dns_server.add("sel._domainkey.example.com", "TXT", "some unrelated note")
    raw = Signer("example.com").publish(dns_server).sign(message())
    (signature,) = await verify(dns_server, raw)
    assert signature.result == "pass"


async def test_key_lookup_timeout_is_temporary(dns_server: DnsServer) -> None:
    raw = Signer("example.com").sign(message())
    dns_server.timeout("sel._domainkey.example.com")
    with pytest.raises(DnsTempError):
        await verify(dns_server, raw, dns_timeout=0.3)


def test_key_names_cover_dkim_and_arc_and_skip_garbage() -> None:
    fields = [
        (b"DKIM-Signature", b" v=1; d=Example.COM; s=a; b=x"),
        (b"ARC-Seal", b" i=1; d=sealer.example; s=arc; cv=none; b=y"),
        (b"ARC-Message-Signature", b" i=1; d=sealer.example; s=arc; b=z"),
        (b"DKIM-Signature", b" v=1; d=example.com; s=a; b=w"),
        (b"DKIM-Signature", b" not a tag list"),
        (b"DKIM-Signature", b" v=1; s=nodomain"),
        (b"Subject", b" d=x; s=y"),
    ]
    assert key_names(fields) == ["a._domainkey.example.com.", "arc._domainkey.sealer.example."]


@pytest.mark.parametrize(("exponent", "bits"), [(65537, 9001), ((1 << 100) + 1, 2048)])
async def test_a_key_that_would_cost_seconds_to_check_fails_without_the_check(
    dns_server: DnsServer, exponent: int, bits: int
) -> None:
    """The sender's DNS picks the key: a huge modulus or exponent is a fail, not a stall."""
    public = rsa.RSAPublicNumbers(exponent, (1 << (bits - 1)) | 1).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_server.add("sel._domainkey.example.com", "TXT", "v=DKIM1; p=" + b64encode(der).decode())
    (signature,) = await verify(dns_server, Signer("example.com").sign(message()))
    # dkimpy treats a key it cannot use as a signature that does not verify: no key taken.
    assert (signature.result, signature.key_bits) == ("fail", 0)
