"""The shared resolver against a real DNS server on a loopback port."""

from __future__ import annotations

import asyncio

import pytest

from ingest.smtp.resolver import CachingResolver, parse_nameserver
from policy.errors import DnsTempError
from tests.support.dnsserver import DnsServer


def make_resolver(server: DnsServer, timeout: float = 2.0) -> CachingResolver:
    return CachingResolver([server.address], timeout=timeout)


async def test_answers_are_normalised(dns_server: DnsServer) -> None:
    dns_server.add("example.com", "A", "192.0.2.1")
    dns_server.add("example.com", "AAAA", "2001:db8::1")
    dns_server.add("example.com", "MX", (10, "mx.example.com"))
    dns_server.add("1.2.0.192.in-addr.arpa", "PTR", "host.example.com")
    resolver = make_resolver(dns_server)
    assert await resolver.resolve("example.com", "A") == ("192.0.2.1",)
    assert await resolver.resolve("example.com.", "AAAA") == ("2001:db8::1",)
    assert await resolver.resolve("EXAMPLE.com", "MX") == ((10, "mx.example.com"),)
    assert await resolver.resolve("1.2.0.192.in-addr.arpa", "PTR") == ("host.example.com",)


async def test_several_txt_records_are_all_returned(dns_server: DnsServer) -> None:
    dns_server.add("example.com", "TXT", "v=spf1 -all")
    dns_server.add("example.com", "TXT", ["google-site-", "verification=x"])
    dns_server.add("example.com", "TXT", "k" * 600)
    resolver = make_resolver(dns_server)
    records = await resolver.txt("example.com")
    assert sorted(records) == sorted([b"v=spf1 -all", b"google-site-verification=x", b"k" * 600])
    raw = await resolver.resolve("example.com", "TXT")
    assert (b"google-site-", b"verification=x") in raw


async def test_nxdomain_and_nodata_are_empty(dns_server: DnsServer) -> None:
    dns_server.add("example.com", "A", "192.0.2.1")
    resolver = make_resolver(dns_server)
    assert await resolver.resolve("missing.example.com", "TXT") == ()
    assert await resolver.resolve("example.com", "TXT") == ()
    assert await resolver.resolve("x" * 70 + ".example.com", "TXT") == ()


async def test_timeout_and_servfail_are_temporary(dns_server: DnsServer) -> None:
    dns_server.timeout("slow.example.com")
    dns_server.servfail("broken.example.com")
    resolver = make_resolver(dns_server, timeout=0.3)
    with pytest.raises(DnsTempError, match="timeout"):
        await resolver.resolve("slow.example.com", "TXT")
    with pytest.raises(DnsTempError, match="SERVFAIL"):
        await resolver.resolve("broken.example.com", "TXT")


async def test_cache_shares_one_lookup_across_a_burst(dns_server: DnsServer) -> None:
    dns_server.add("burst.example.com", "TXT", "v=spf1 -all")
    dns_server.add("gone.example.com", "A", "192.0.2.9")
    resolver = make_resolver(dns_server)
    results = await asyncio.gather(*(resolver.txt("burst.example.com") for _ in range(20)))
    assert all(r == [b"v=spf1 -all"] for r in results)
    await resolver.txt("Burst.Example.com.")
    await resolver.resolve("gone.example.com", "TXT")
    await resolver.resolve("gone.example.com", "TXT")
    assert dns_server.queries[("burst.example.com", "TXT")] == 1
    assert dns_server.queries[("gone.example.com", "TXT")] == 1


async def test_ttl_zero_is_not_cached(dns_server: DnsServer) -> None:
    dns_server.add("fresh.example.com", "TXT", "one", ttl=0)
    resolver = make_resolver(dns_server)
    assert await resolver.txt("fresh.example.com") == [b"one"]
    dns_server.remove("fresh.example.com")
    dns_server.add("fresh.example.com", "TXT", "two", ttl=0)
    assert await resolver.txt("fresh.example.com") == [b"two"]


async def test_cache_is_bounded(dns_server: DnsServer) -> None:
    for i in range(5):
        dns_server.add(f"n{i}.example.com", "A", f"192.0.2.{i}")
    resolver = CachingResolver([dns_server.address], timeout=2.0, max_entries=2)
    for i in range(5):
        await resolver.resolve(f"n{i}.example.com", "A")
    await resolver.resolve("n0.example.com", "A")
    assert dns_server.queries[("n0.example.com", "A")] == 2
    assert dns_server.queries[("n4.example.com", "A")] == 1


def test_nameserver_forms() -> None:
    v4 = parse_nameserver("127.0.0.1:5353")
    assert (v4.address, v4.port) == ("127.0.0.1", 5353)
    plain = parse_nameserver("192.0.2.53")
    assert (plain.address, plain.port) == ("192.0.2.53", 53)
    v6 = parse_nameserver("[::1]:5300")
    assert (v6.address, v6.port) == ("::1", 5300)
    bare6 = parse_nameserver("2001:db8::53")
    assert (bare6.address, bare6.port) == ("2001:db8::53", 53)


async def test_observers_see_queries_and_cache_hits(dns_server: DnsServer) -> None:
    dns_server.add("seen.example.com", "A", "192.0.2.7")
    queries: list[str] = []
    hits: list[None] = []
    resolver = CachingResolver(
        [dns_server.address],
        timeout=2.0,
        on_query=queries.append,
        on_cache_hit=lambda: hits.append(None),
    )
    for _ in range(3):
        await resolver.resolve("seen.example.com", "A")
    await resolver.resolve("seen.example.com", "TXT")
    assert (queries, len(hits)) == (["A", "TXT"], 2)


@pytest.mark.parametrize("name", ["\u2603.example", "sel\\", "a..example"])
async def test_names_nobody_can_own_are_empty_not_temporary(
    dns_server: DnsServer, name: str
) -> None:
    """A From domain or selector that is not a DNS name cannot start to resolve later;
    a DnsTempError here would defer the message for days, then bounce it."""
    resolver = CachingResolver([dns_server.address], timeout=2.0)
    assert await resolver.txt(name) == []
