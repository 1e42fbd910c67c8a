"""SPF through pyspf and the shared resolver, against a loopback DNS server."""

from __future__ import annotations

import pytest

from ingest.smtp.resolver import CachingResolver
from policy.verify.spf import ResultCache, check_identity, check_spf
from tests.support.dnsserver import DnsServer

IP = "192.0.2.10"


def resolver_for(server: DnsServer, timeout: float = 2.0) -> CachingResolver:
    return CachingResolver([server.address], timeout=timeout)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
        ("v=spf1 ip4:198.51.100.0/24 -all", "fail"),
        ("v=spf1 ip4:198.51.100.0/24 ~all", "softfail"),
        ("v=spf1 ?all", "neutral"),
        ("v=spf1 ip4:192.0.2.0/24 bogus:mechanism -all", "permerror"),
    ],
)
async def test_mailfrom_results(dns_server: DnsServer, record: str, expected: str) -> None:
    dns_server.add("sender.example", "TXT", record)
    dns_server.add("sender.example", "TXT", "unrelated verification token")
    check = await check_identity(
        resolver_for(dns_server), IP, "alice@sender.example", "mx.sender.example", "mailfrom"
    )
    assert (check.identity, check.domain, check.result) == ("mailfrom", "sender.example", expected)
    assert check.dns_failure is False


async def test_no_record_is_none(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "not spf")
    check = await check_identity(resolver_for(dns_server), IP, "a@sender.example", "h", "mailfrom")
    assert check.result == "none"


async def test_two_spf_records_are_a_permerror(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 -all")
    dns_server.add("sender.example", "TXT", "v=spf1 +all")
    check = await check_identity(resolver_for(dns_server), IP, "a@sender.example", "h", "mailfrom")
    assert check.result == "permerror"


async def test_a_and_mx_and_include_follow_dns(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 include:_spf.provider.example -all")
    dns_server.add("_spf.provider.example", "TXT", "v=spf1 mx a:relay.provider.example -all")
    dns_server.add("_spf.provider.example", "MX", (10, "mx.provider.example"))
    dns_server.add("mx.provider.example", "A", "203.0.113.5")
    dns_server.add("relay.provider.example", "A", IP)
    resolver = resolver_for(dns_server)
    check = await check_identity(resolver, IP, "a@sender.example", "h.example", "mailfrom")
    assert check.result == "pass"
    other = await check_identity(resolver, "203.0.113.5", "a@sender.example", "h", "mailfrom")
    assert other.result == "pass"
    stranger = await check_identity(resolver, "203.0.113.6", "a@sender.example", "h", "mailfrom")
    assert stranger.result == "fail"


async def test_dns_timeout_is_a_temperror_flagged_as_dns(dns_server: DnsServer) -> None:
    dns_server.timeout("sender.example")
    check = await check_identity(
        resolver_for(dns_server, timeout=0.3), IP, "a@sender.example", "h", "mailfrom"
    )
    assert check.result == "temperror"
    assert check.dns_failure is True


async def test_servfail_in_an_include_is_a_temperror(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 include:broken.example -all")
    dns_server.servfail("broken.example")
    check = await check_identity(resolver_for(dns_server), IP, "a@sender.example", "h", "mailfrom")
    assert (check.result, check.dns_failure) == ("temperror", True)


async def test_more_than_ten_dns_terms_is_a_permerror(dns_server: DnsServer) -> None:
    includes = " ".join(f"include:i{n}.sender.example" for n in range(11))
    dns_server.add("sender.example", "TXT", f"v=spf1 {includes} -all")
    for n in range(11):
        dns_server.add(f"i{n}.sender.example", "TXT", "v=spf1 ip4:198.51.100.1 ?all")
    resolver = resolver_for(dns_server)
    check = await check_identity(resolver, IP, "a@sender.example", "h", "mailfrom")
    assert check.result == "permerror"
    # Ten terms are still within the limit.
    dns_server.remove("sender.example")
    includes = " ".join(f"include:i{n}.sender2.example" for n in range(10))
    dns_server.add("sender2.example", "TXT", f"v=spf1 {includes} -all")
    for n in range(10):
        dns_server.add(f"i{n}.sender2.example", "TXT", "v=spf1 ip4:198.51.100.1 ?all")
    ok = await check_identity(resolver, IP, "a@sender2.example", "h", "mailfrom")
    assert ok.result == "fail"


async def test_more_than_two_void_lookups_is_a_permerror(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 a:v1.example a:v2.example a:v3.example -all")
    dns_server.add("two.example", "TXT", "v=spf1 a:v1.example a:v2.example -all")
    resolver = resolver_for(dns_server)
    check = await check_identity(resolver, IP, "a@sender.example", "h", "mailfrom")
    assert check.result == "permerror"
    assert "void" in check.explanation.lower()
    two = await check_identity(resolver, IP, "a@two.example", "h", "mailfrom")
    assert two.result == "fail"


async def test_both_identities_and_the_null_sender(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 -all")
    dns_server.add("mx.forwarder.example", "TXT", f"v=spf1 ip4:{IP} -all")
    resolver = resolver_for(dns_server)
    mailfrom, helo = await check_spf(resolver, IP, "a@sender.example", "mx.forwarder.example")
    assert (mailfrom.domain, mailfrom.result) == ("sender.example", "fail")
    assert (helo.identity, helo.domain, helo.result) == ("helo", "mx.forwarder.example", "pass")
    bounce, bounce_helo = await check_spf(resolver, IP, "", "mx.forwarder.example")
    assert (bounce.identity, bounce.domain, bounce.result) == (
        "mailfrom",
        "mx.forwarder.example",
        "pass",
    )
    assert bounce_helo.result == "pass"


async def test_lookups_share_the_cache_across_checks(dns_server: DnsServer) -> None:
    dns_server.add("sender.example", "TXT", "v=spf1 a:relay.sender.example -all")
    dns_server.add("relay.sender.example", "A", IP)
    resolver = resolver_for(dns_server)
    for _ in range(5):
        check = await check_identity(resolver, IP, "a@sender.example", "h", "mailfrom")
        assert check.result == "pass"
    assert dns_server.queries[("sender.example", "TXT")] == 1
    assert dns_server.queries[("relay.sender.example", "A")] == 1


async def test_results_are_kept_while_their_dns_answers_are_fresh(dns_server: DnsServer) -> None:
    dns_server.add("kept.example", "TXT", f"v=spf1 ip4:{IP} -all")
    dns_server.add("fresh.example", "TXT", f"v=spf1 ip4:{IP} -all", ttl=0)
    cache = ResultCache()
    for domain in ("kept.example", "fresh.example"):
        first = await check_spf(resolver_for(dns_server), IP, f"a@{domain}", "h.example", cache)
        assert first[0].result == "pass"
        dns_server.remove(domain)
        dns_server.add(domain, "TXT", "v=spf1 -all", ttl=0)
    # A new resolver has an empty DNS cache: only the result cache can answer.
    resolver = resolver_for(dns_server)
    kept, _helo = await check_spf(resolver, IP, "a@kept.example", "h.example", cache)
    fresh, _helo = await check_spf(resolver, IP, "a@fresh.example", "h.example", cache)
    assert (kept.result, fresh.result) == ("pass", "fail")
    assert dns_server.queries[("kept.example", "TXT")] == 1
    assert dns_server.queries[("fresh.example", "TXT")] == 2


async def test_temperrors_are_not_kept(dns_server: DnsServer) -> None:
    dns_server.servfail("flaky.example")
    cache = ResultCache()
    failed, _helo = await check_spf(resolver_for(dns_server), IP, "a@flaky.example", "h", cache)
    assert (failed.result, failed.dns_failure) == ("temperror", True)
    dns_server.servfails.clear()
    dns_server.add("flaky.example", "TXT", f"v=spf1 ip4:{IP} -all")
    recovered, _helo = await check_spf(resolver_for(dns_server), IP, "a@flaky.example", "h", cache)
    assert recovered.result == "pass"
