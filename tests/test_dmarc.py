"""DMARC on plain data (alignment tables, records, pct) and discovery over DNS."""

from __future__ import annotations

import pytest

from ingest.smtp.resolver import CachingResolver
from policy.errors import DnsTempError
from policy.verify.dmarc import (
    DmarcRecord,
    PolicyDiscovery,
    aligned,
    discover,
    evaluate,
    organizational_domain,
    parse_record,
    sampled,
    select,
)
from tests.support.dnsserver import DnsServer


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("a.b.example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("co.uk", "co.uk"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "author", "mode", "expected"),
    [
        ("example.com", "example.com", "s", True),
        ("mail.example.com", "example.com", "s", False),
        ("mail.example.com", "example.com", "r", True),
        ("example.com", "news.example.com", "r", True),
        ("example.co.uk", "mail.example.co.uk", "r", True),
        ("other.co.uk", "mail.example.co.uk", "r", False),
        ("co.uk", "example.co.uk", "r", False),
        ("srs.forwarder.example", "example.com", "r", False),
        ("", "example.com", "r", False),
    ],
)
def test_alignment(identifier: str, author: str, mode: str, expected: bool) -> None:
    assert aligned(identifier, author, mode) is expected


@pytest.mark.parametrize(
    ("text", "record"),
    [
        (b"v=DMARC1; p=reject", DmarcRecord("reject")),
        (
            b"v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=25;rua=mailto:x@example.com",
            DmarcRecord("quarantine", "none", "s", "s", 25),
        ),
        (b"v=DMARC1; p=NONE; pct=150; adkim=x; sp=bogus", DmarcRecord("none")),
        (b"v=DMARC1; p=reject; pct=-1", DmarcRecord("reject")),
        (b"v=DMARC1; sp=reject", None),
        (b"v=DMARC1; p=discard", None),
    ],
)
def test_parse_record(text: bytes, record: DmarcRecord | None) -> None:
    assert parse_record(text) == record


def test_select_records() -> None:
    assert select([b"v=spf1 -all"]) == (False, PolicyDiscovery(None))
    found, discovery = select([b"v=spf1 -all", b"v=DMARC1; p=reject"])
    assert found and discovery.record == DmarcRecord("reject")
    found, discovery = select([b"v=DMARC1; p=reject", b"v=DMARC1; p=none"])
    assert found and discovery.record is None and discovery.problem
    found, discovery = select([b"v=DMARC1; rua=mailto:a@b.example"])
    assert found and discovery.record is None and discovery.problem
    # v=DMARC1 must come first.
    assert select([b"p=reject; v=DMARC1"])[0] is False


REJECT = PolicyDiscovery(DmarcRecord("reject"), "example.com")


@pytest.mark.parametrize(
    ("spf", "spf_domain", "dkim", "result", "policy"),
    [
        ("pass", "example.com", [], "pass", "none"),
        ("pass", "bounces.example.com", [], "pass", "none"),
        ("pass", "forwarder.example", [], "fail", "reject"),
        ("fail", "example.com", [], "fail", "reject"),
        ("softfail", "example.com", ["esp.example"], "fail", "reject"),
        # Only the second signature aligns: still a pass (authheaders gets this wrong).
        ("fail", "forwarder.example", ["esp.example", "example.com"], "pass", "none"),
        ("none", "", ["mail.example.com"], "pass", "none"),
    ],
)
def test_evaluate_alignment_table(
    spf: str, spf_domain: str, dkim: list[str], result: str, policy: str
) -> None:
    outcome = evaluate("example.com", REJECT, spf, spf_domain, dkim, "<id@example.com>")
    assert (outcome.result, outcome.policy) == (result, policy)
    assert outcome.requested == "reject"


def test_strict_alignment() -> None:
    strict = PolicyDiscovery(DmarcRecord("reject", adkim="s", aspf="s"), "example.com")
    outcome = evaluate("example.com", strict, "pass", "mail.example.com", ["news.example.com"], "")
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == ("fail", False, ())
    exact = evaluate("example.com", strict, "fail", "x.example", ["example.com"], "")
    assert (exact.result, exact.dkim_aligned) == ("pass", ("example.com",))


def test_no_record_and_broken_record() -> None:
    assert evaluate("example.com", PolicyDiscovery(None), "fail", "", [], "").result == "none"
    broken = PolicyDiscovery(None, "example.com", "several DMARC records")
    outcome = evaluate("example.com", broken, "fail", "", [], "")
    assert (outcome.result, outcome.policy) == ("permerror", "none")


def test_subdomain_policy_applies_only_below_the_record_domain() -> None:
    org = PolicyDiscovery(DmarcRecord("reject", sp="quarantine"), "example.com")
    assert evaluate("news.example.com", org, "fail", "", [], "").policy == "quarantine"
    assert evaluate("example.com", org, "fail", "", [], "").policy == "reject"
    no_sp = PolicyDiscovery(DmarcRecord("reject"), "example.com")
    assert evaluate("news.example.com", no_sp, "fail", "", [], "").policy == "reject"


def test_pct_zero_never_applies_the_policy() -> None:
    zero = PolicyDiscovery(DmarcRecord("reject", pct=0), "example.com")
    outcomes = [evaluate("example.com", zero, "fail", "", [], f"<{n}@x>") for n in range(50)]
    assert {(o.result, o.policy, o.sampled_out) for o in outcomes} == {("fail", "quarantine", True)}
    quarantine = PolicyDiscovery(DmarcRecord("quarantine", pct=0), "example.com")
    assert evaluate("example.com", quarantine, "fail", "", [], "<a@x>").policy == "none"


def test_pct_sampling_is_deterministic_and_proportional() -> None:
    ids = [f"<{n}@example.com>" for n in range(2000)]
    inside = [i for i in ids if sampled(i, 30)]
    assert 450 < len(inside) < 750
    assert inside == [i for i in ids if sampled(i, 30)]
    assert all(sampled(i, 100) for i in ids[:50])
    assert not any(sampled(i, 0) for i in ids[:50])


def test_pct_sampling_is_keyed_by_our_secret() -> None:
    """A spoofer choosing Message-IDs cannot know which fall outside the sample."""
    ids = [f"<{n}@example.com>" for n in range(2000)]
    ours = {i for i in ids if sampled(i, 30, b"k" * 32)}
    theirs = {i for i in ids if sampled(i, 30, b"x" * 32)}
    assert 450 < len(ours) < 750 and 450 < len(theirs) < 750
    assert ours != theirs and ours != {i for i in ids if sampled(i, 30)}
    record = PolicyDiscovery(DmarcRecord("reject", pct=30), "example.com")
    [kept] = [i for i in ids[:50] if i in ours][:1]
    assert evaluate("example.com", record, "fail", "", [], kept, b"k" * 32).policy == "reject"


async def test_discovery_at_the_from_domain(dns_server: DnsServer) -> None:
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.example.com", "TXT", "some other note")
    found = await discover(CachingResolver([dns_server.address], timeout=2.0), "example.com")
    assert (found.record, found.record_domain) == (DmarcRecord("reject"), "example.com")


async def test_discovery_falls_back_to_the_organisational_domain(dns_server: DnsServer) -> None:
    dns_server.add("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=none; sp=reject")
    resolver = CachingResolver([dns_server.address], timeout=2.0)
    found = await discover(resolver, "mail.example.co.uk")
    assert found.record_domain == "example.co.uk"
    assert found.disposition("mail.example.co.uk") == "reject"
    assert dns_server.queries[("_dmarc.mail.example.co.uk", "TXT")] == 1
    nothing = await discover(resolver, "example.org")
    assert (nothing.record, nothing.problem) == (None, None)


async def test_several_records_at_the_from_domain_stop_discovery(dns_server: DnsServer) -> None:
    dns_server.add("_dmarc.sub.example.com", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.sub.example.com", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    found = await discover(CachingResolver([dns_server.address], timeout=2.0), "sub.example.com")
    assert (found.record, found.problem is not None) == (None, True)
    assert dns_server.queries[("_dmarc.example.com", "TXT")] == 0


async def test_discovery_dns_failure_is_temporary(dns_server: DnsServer) -> None:
    dns_server.servfail("_dmarc.example.com")
    with pytest.raises(DnsTempError):
        await discover(CachingResolver([dns_server.address], timeout=2.0), "example.com")
