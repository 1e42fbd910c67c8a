"""The whole verifier on plain bytes: SPF, DKIM, ARC, DMARC and forwarding together.

Every test publishes its own zones in the loopback DNS server and signs with
its own keys; nothing is mocked.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ingest.smtp.resolver import CachingResolver
from ingest.smtp.verification import process_pool
from policy.config.model import Config, MailboxConfig, PolicyConfig, PolicyOverride
from policy.message.headerblock import canonical, read
from policy.verify.authenticate import INLINE_MAX_BYTES, Authenticator
from policy.verify.decide import dmarc_reject_reply
from policy.verify.verdict import Action, Envelope, ForwardingKind
from tests.support.dnsserver import DnsServer
from tests.support.signing import Signer, message

SERVER = "mx.help.example"
MAILBOX = MailboxConfig(channel="helpdesk", name="Support", address="support@help.example")
SENDER_IP = "192.0.2.10"
FORWARDER_IP = "198.51.100.7"


@pytest.fixture
def authenticator(dns_server: DnsServer) -> Authenticator:
    return Authenticator(CachingResolver([dns_server.address], timeout=2.0), SERVER)


def envelope(mail_from: str = "alice@example.com", ip: str = SENDER_IP) -> Envelope:
    return Envelope(ip, None, "mx.example.com", mail_from, ("support@help.example",))


def publish_sender(server: DnsServer, dmarc: str = "v=DMARC1; p=reject") -> Signer:
    server.add("example.com", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    server.add("_dmarc.example.com", "TXT", dmarc)
    server.add("forwarder.example", "TXT", f"v=spf1 ip4:{FORWARDER_IP} -all")
    return Signer("example.com").publish(server)


def srs_envelope() -> Envelope:
    return envelope("SRS0=AbCd=TT=example.com=alice@forwarder.example", FORWARDER_IP)


def footer(raw: bytes) -> bytes:
    return raw + b"\r\n-- \r\nForwarded by the Forwarder mail service.\r\n"


async def test_direct_signed_mail_is_accepted(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    verdict = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason, verdict.forwarding) == (
        Action.ACCEPT,
        "accepted",
        ForwardingKind.DIRECT,
    )
    results = verdict.authentication_results or ""
    assert results.startswith(SERVER + ";")
    for part in (
        "spf=pass smtp.mailfrom=example.com",
        "dkim=pass header.d=example.com",
        "dmarc=pass header.from=example.com",
        "arc=none",
    ):
        assert part in results
    assert verdict.details["dmarc"]["dkim_aligned"] == ("example.com",)


async def test_dmarc_reject_gives_the_exact_550(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    publish_sender(dns_server)
    verdict = await authenticator.verify(
        message(), envelope(ip="203.0.113.66"), MAILBOX, PolicyConfig()
    )
    assert (verdict.action, verdict.reason) == (Action.REJECT, "dmarc_reject")
    assert verdict.reply == (
        "550 5.7.1 Unauthenticated email from example.com is not accepted due to domain's "
        "DMARC policy. Please contact the administrator of example.com domain."
    )
    assert verdict.details["dmarc"]["result"] == "fail"
    assert "dmarc=fail (p=reject dis=reject)" in (verdict.authentication_results or "")


@pytest.mark.parametrize(
    ("record", "action", "reason"),
    [
        ("v=DMARC1; p=quarantine", Action.QUARANTINE, "dmarc_quarantine"),
        ("v=DMARC1; p=none", Action.ACCEPT, "dmarc_none"),
        ("v=DMARC1; p=reject; pct=0", Action.QUARANTINE, "dmarc_quarantine"),
        ("v=DMARC1; p=quarantine; pct=0", Action.ACCEPT, "dmarc_none"),
    ],
)
async def test_dmarc_policies(
    dns_server: DnsServer,
    authenticator: Authenticator,
    record: str,
    action: Action,
    reason: str,
) -> None:
    publish_sender(dns_server, record)
    verdict = await authenticator.verify(
        message(), envelope(ip="203.0.113.66"), MAILBOX, PolicyConfig()
    )
    assert (verdict.action, verdict.reason, verdict.reply) == (action, reason, None)
    assert "dmarc=fail" in (verdict.authentication_results or "")


async def test_monitor_never_rejects_but_records(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    publish_sender(dns_server)
    verdict = await authenticator.verify(
        message(), envelope(ip="203.0.113.66"), MAILBOX, PolicyConfig(dmarc="monitor")
    )
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "dmarc_monitor")
    assert verdict.details["dmarc"]["policy"] == "reject"


async def test_subdomain_policy_sp(dns_server: DnsServer, authenticator: Authenticator) -> None:
    publish_sender(dns_server, "v=DMARC1; p=none; sp=reject")
    raw = message(sender="Alice <alice@news.example.com>")
    verdict = await authenticator.verify(
        raw, envelope("alice@news.example.com", "203.0.113.66"), MAILBOX, PolicyConfig()
    )
    assert verdict.reply == dmarc_reject_reply("news.example.com")
    top = await authenticator.verify(
        message(), envelope(ip="203.0.113.66"), MAILBOX, PolicyConfig()
    )
    assert (top.action, top.reason) == (Action.ACCEPT, "dmarc_none")


async def test_org_domain_fallback(dns_server: DnsServer, authenticator: Authenticator) -> None:
    dns_server.add("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=reject")
    raw = message(sender="Shop <orders@mail.example.co.uk>")
    verdict = await authenticator.verify(
        raw, envelope("orders@mail.example.co.uk"), MAILBOX, PolicyConfig()
    )
    assert verdict.action is Action.REJECT
    assert verdict.reply == dmarc_reject_reply("mail.example.co.uk")
    assert verdict.details["dmarc"]["record_domain"] == "example.co.uk"
    signed = Signer("example.co.uk").publish(dns_server).sign(raw)
    ok = await authenticator.verify(
        signed, envelope("orders@mail.example.co.uk"), MAILBOX, PolicyConfig()
    )
    assert (ok.action, ok.reason) == (Action.ACCEPT, "accepted")


async def test_only_the_second_signature_aligns(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    publish_sender(dns_server)
    esp = Signer("esp.example").publish(dns_server)
    raw = esp.sign(Signer("example.com").sign(message()))
    verdict = await authenticator.verify(raw, srs_envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "accepted")
    assert [d["domain"] for d in verdict.details["dkim"]] == ["esp.example", "example.com"]


async def test_native_forward_with_intact_dkim_is_accepted(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    raw = b"X-Forwarded-To: support@help.example\r\n" + raw
    verdict = await authenticator.verify(raw, srs_envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.forwarding) == (Action.ACCEPT, ForwardingKind.NATIVE)
    spf_mailfrom = verdict.details["spf"][0]
    assert (spf_mailfrom["domain"], spf_mailfrom["result"]) == ("forwarder.example", "pass")
    assert verdict.details["dmarc"]["spf_aligned"] is False


def sealed_by(server: DnsServer, domain: str, raw: bytes) -> bytes:
    """What a forwarder does: record its own checks, add a footer, seal."""
    results = (
        f"Authentication-Results: mx.{domain}; dkim=pass header.d=example.com;"
        " spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=example.com\r\n"
    )
    sealer = Signer(domain, "arc").publish(server)
    return sealer.seal(footer(results.encode() + raw), f"mx.{domain}")


async def test_native_forward_with_footer_is_rejected_without_trusted_arc(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    broken = await authenticator.verify(footer(raw), srs_envelope(), MAILBOX, PolicyConfig())
    assert (broken.action, broken.reason) == (Action.REJECT, "dmarc_reject")
    assert broken.details["dkim"][0]["result"] == "fail"
    sealed = sealed_by(dns_server, "forwarder.example", raw)
    untrusted = await authenticator.verify(sealed, srs_envelope(), MAILBOX, PolicyConfig())
    assert untrusted.action is Action.REJECT
    assert untrusted.details["arc"]["cv"] == "pass"


async def test_native_forward_with_footer_accepted_via_trusted_sealer(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    sealed = sealed_by(dns_server, "forwarder.example", raw)
    policy = PolicyConfig(trusted_arc_sealers=["forwarder.example"])
    verdict = await authenticator.verify(sealed, srs_envelope(), MAILBOX, policy)
    assert (verdict.action, verdict.reason, verdict.forwarding) == (
        Action.ACCEPT,
        "arc_trusted_forwarder",
        ForwardingKind.NATIVE_ARC,
    )
    assert "arc=pass (sealed by forwarder.example)" in (verdict.authentication_results or "")
    # A sealer that recorded dmarc=fail on arrival vouches for nothing.
    liar = sealed.replace(b"dmarc=pass", b"dmarc=fail")
    refused = await authenticator.verify(liar, srs_envelope(), MAILBOX, policy)
    assert refused.action is Action.REJECT


async def test_per_mailbox_trusted_sealer(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    sealed = sealed_by(dns_server, "forwarder.example", raw)
    special = MailboxConfig(
        channel="helpdesk",
        name="Special",
        address="special@help.example",
        policy=PolicyOverride(trusted_arc_sealers=["forwarder.example"]),
    )
    config = Config.model_validate(
        {
            "channels": [{"name": "helpdesk"}],
            "mailboxes": [MAILBOX.model_dump(), special.model_dump()],
        }
    )
    for mailbox, action in ((MAILBOX, Action.REJECT), (special, Action.ACCEPT)):
        policy = config.effective_policy(mailbox)
        verdict = await authenticator.verify(sealed, srs_envelope(), mailbox, policy)
        assert verdict.action is action


GMAIL_FORWARD = (
    "FYI\r\n\r\n---------- Forwarded message ---------\r\n"
    "From: Alice <alice@example.com>\r\nSubject: Printer\r\n\r\nIt is on fire.\r\n"
)


@pytest.mark.parametrize(
    ("setting", "action", "reason"),
    [
        ("reject", Action.REJECT, "manual_forward"),
        ("quarantine", Action.QUARANTINE, "manual_forward_quarantine"),
        ("accept", Action.ACCEPT, "manual_forward_accepted"),
    ],
)
async def test_manual_forward_policy(
    dns_server: DnsServer,
    authenticator: Authenticator,
    setting: str,
    action: Action,
    reason: str,
) -> None:
    dns_server.add("customer.example", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    dns_server.add("_dmarc.customer.example", "TXT", "v=DMARC1; p=reject")
    raw = message(sender="Bob <bob@customer.example>", subject="Fwd: Printer", body=GMAIL_FORWARD)
    verdict = await authenticator.verify(
        raw, envelope("bob@customer.example"), MAILBOX, PolicyConfig(manual_forward=setting)
    )
    assert (verdict.action, verdict.reason, verdict.forwarding) == (
        action,
        reason,
        ForwardingKind.MANUAL,
    )
    # Whatever the policy decides, the verdict names whom the forward came from.
    assert verdict.details["forwarding"]["original_sender"] == "alice@example.com"
    if action is Action.REJECT:
        assert verdict.reply is not None
        assert verdict.reply.startswith("550 5.7.1 Manually forwarded")
        assert "native forwarding" in verdict.reply


async def test_a_helo_lookup_timing_out_does_not_defer_the_message(
    dns_server: DnsServer,
) -> None:
    raw = publish_sender(dns_server).sign(message())
    dns_server.timeout("mx.example.com")
    impatient = Authenticator(CachingResolver([dns_server.address], timeout=0.3), SERVER)
    verdict = await impatient.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "accepted")
    assert "spf=temperror smtp.helo=mx.example.com" in (verdict.authentication_results or "")
    # With a null sender HELO is the MAIL FROM identity: unsigned, that defers.
    null_sender = await impatient.verify(message(), envelope(""), MAILBOX, PolicyConfig())
    assert null_sender.action is Action.TEMPFAIL


@pytest.mark.parametrize(
    ("broken", "signed"),
    [("_dmarc.example.com", True), ("sel._domainkey.example.com", True), ("example.com", False)],
)
async def test_dns_timeout_that_could_change_the_verdict_is_a_451(
    dns_server: DnsServer, broken: str, signed: bool
) -> None:
    signer = publish_sender(dns_server)
    raw = signer.sign(message()) if signed else message()
    dns_server.timeout(broken)
    impatient = Authenticator(CachingResolver([dns_server.address], timeout=0.3), SERVER)
    verdict = await impatient.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason) == (Action.TEMPFAIL, "dns_tempfail")
    assert verdict.reply is not None and verdict.reply.startswith("451 4.7.0 ")


@pytest.mark.parametrize("broken", ["old._domainkey.example.com", "example.com"])
async def test_a_servfail_that_cannot_change_the_verdict_does_not_defer(
    dns_server: DnsServer, authenticator: Authenticator, broken: str
) -> None:
    """Another aligned DKIM signature passes: DMARC passes whatever the failed
    lookup (an older selector's key, or SPF) would have said."""
    publish_sender(dns_server)  # selector "sel"
    old = Signer("example.com", selector="old").publish(dns_server)
    raw = Signer("example.com").sign(old.sign(message()))
    dns_server.servfail(broken)
    verdict = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "accepted")
    assert verdict.details["dmarc"]["result"] == "pass"
    results = verdict.authentication_results or ""
    if broken == "example.com":
        assert "spf=temperror smtp.mailfrom=example.com" in results
    else:
        assert [s["result"] for s in verdict.details["dkim"]] == ["pass", "temperror"]
        assert "dkim=temperror" in results
    # Without an aligned pass the same failure defers, as before.
    dns_server.servfail("sel._domainkey.example.com")
    dns_server.servfail("old._domainkey.example.com")
    uncached = Authenticator(CachingResolver([dns_server.address], timeout=2.0), SERVER)
    deferred = await uncached.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (deferred.action, deferred.reason) == (Action.TEMPFAIL, "dns_tempfail")


async def test_servfail_is_a_451(dns_server: DnsServer, authenticator: Authenticator) -> None:
    publish_sender(dns_server)
    dns_server.servfail("_dmarc.example.com")
    verdict = await authenticator.verify(message(), envelope(), MAILBOX, PolicyConfig())
    assert verdict.action is Action.TEMPFAIL


@pytest.mark.parametrize(
    "raw",
    [
        b"To: support@help.example\r\nSubject: no author\r\n\r\nhi\r\n",
        b"From: a@example.com\r\nFrom: b@example.com\r\nSubject: two\r\n\r\nhi\r\n",
        b"From: a@example.com, b@example.org\r\nSubject: two\r\n\r\nhi\r\n",
    ],
)
async def test_malformed_from_is_refused(authenticator: Authenticator, raw: bytes) -> None:
    verdict = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig(dmarc="monitor"))
    assert (verdict.action, verdict.reason) == (Action.REJECT, "from_malformed")
    assert verdict.reply is not None and verdict.reply.startswith("550 5.7.1 ")


async def test_trusted_network_checks_spf_for_the_hop_before_it(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    publish_sender(dns_server)
    raw = (
        b"Received: from edge2.help.example (edge2.help.example [10.0.0.6])\r\n"
        b"\tby edge1.help.example; Wed, 25 Nov 2026 08:00:00 +0000\r\n"
        b"Received: from mx.example.com (mx.example.com [192.0.2.10])\r\n"
        b"\tby edge2.help.example; Wed, 25 Nov 2026 08:00:00 +0000\r\n" + message()
    )
    relay = envelope(ip="10.0.0.5")
    trusted = PolicyConfig(trusted_networks=[ipaddress.ip_network("10.0.0.0/24")])
    verdict = await authenticator.verify(raw, relay, MAILBOX, trusted)
    assert (verdict.action, verdict.details["spf_ip"]) == (Action.ACCEPT, SENDER_IP)
    untrusted = await authenticator.verify(raw, relay, MAILBOX, PolicyConfig())
    assert untrusted.action is Action.REJECT


@pytest.fixture
def pool_authenticator(dns_server: DnsServer) -> Iterator[Authenticator]:
    with process_pool() as pool:
        yield Authenticator(CachingResolver([dns_server.address], timeout=2.0), SERVER, pool)


async def test_signature_checks_run_in_a_process_pool(
    dns_server: DnsServer, pool_authenticator: Authenticator
) -> None:
    raw = publish_sender(dns_server).sign(message())
    verdict = await pool_authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.details["dkim"][0]["result"]) == (Action.ACCEPT, "pass")


class _CountingPool(ThreadPoolExecutor):
    """A real executor that counts what it is handed."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_inline_keeps_small_messages_on_the_loop_and_hands_over_large_ones(
    dns_server: DnsServer,
) -> None:
    signer = publish_sender(dns_server)
    small = signer.sign(message())
    large = signer.sign(message(body="A long line of the body.\r\n" * (INLINE_MAX_BYTES // 20)))
    with _CountingPool() as pool:
        resolver = CachingResolver([dns_server.address], timeout=2.0)
        authenticator = Authenticator(resolver, SERVER, pool, inline=True)
        verdicts = [
            await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
            for raw in (small, large)
        ]
        assert pool.calls == 1
    for verdict in verdicts:
        assert (verdict.action, verdict.details["dkim"][0]["result"]) == (Action.ACCEPT, "pass")


WORKER_SCRIPT = """
import os, time
from ingest.smtp.verification import process_pool
pool = process_pool()
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(120)
"""


def test_pool_workers_exit_when_the_server_is_killed() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert server.stdout is not None
    worker = int(server.stdout.readline())
    assert worker != server.pid
    server.kill()
    server.wait()
    server.stdout.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"pool worker {worker} outlived its killed server")


async def test_a_header_line_without_a_colon_is_judged_not_deferred(
    dns_server: DnsServer, authenticator: Authenticator
) -> None:
    """dkimpy's own parser refuses such a message outright (a 451 the forwarder
    would retry for days). The one header reading drops the line, and what is
    verified is what is stored: the signature, which never covered the line,
    verifies over that."""
    signed = publish_sender(dns_server, "v=DMARC1; p=reject").sign(message())
    head, _, body = signed.partition(b"\r\n\r\n")
    broken = head + b"\r\nthis line is no header field\r\n\r\n" + body
    verdict = await authenticator.verify(broken, envelope(), MAILBOX, PolicyConfig())
    assert verdict.action == Action.ACCEPT
    [signature] = verdict.details["dkim"]
    assert signature["result"] == "pass" and signature["domain"] == "example.com"
    assert canonical(broken) == signed


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"\xef\xbb\xbf" + raw,  # a byte-order mark
        lambda raw: raw.replace(b"Subject:", b"Subject :", 1),  # RFC 5322 4.5.3
        lambda raw: raw.replace(b"\r\n\r\n", b"\r\nS\xc3\xbcbject: x\r\n\r\n", 1),
        lambda raw: raw + b"\x00\xff\xfe binary tail \x80\r\n",
        lambda raw: raw.replace(b"\r\n", b"\n"),  # a file handed over with LF
    ],
    ids=["bom", "obsolete-colon", "8bit-name", "binary-tail", "lf"],
)
async def test_header_block_oddities_get_a_verdict_not_a_451(
    dns_server: DnsServer, authenticator: Authenticator, damage: Callable[[bytes], bytes]
) -> None:
    raw = damage(publish_sender(dns_server, "v=DMARC1; p=none").sign(message()))
    verdict = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert verdict.action == Action.ACCEPT, verdict
    assert verdict.details["author"] == "alice@example.com"
    assert verdict.details["dmarc"]["author"] == "example.com"


async def test_thousands_of_continuation_lines_are_read_in_linear_time_or_refused(
    authenticator: Authenticator,
) -> None:
    """Issue 12's folded header: dkimpy appended continuation lines one by one."""
    folded = b"Subject: x\r\n" + b" a\r\n" * 60_000 + b"From: a@example.com\r\n\r\nbody\r\n"
    assert len(read(folded).fields) == 2
    huge = b"Subject: x\r\n" + b" a\r\n" * 2_000_000 + b"\r\nbody\r\n"
    verdict = await authenticator.verify(huge, envelope(), MAILBOX, PolicyConfig())
    assert (verdict.action, verdict.reason) == (Action.REJECT, "header_too_large")
    assert verdict.reply is not None and verdict.reply.startswith("552 5.3.4 ")


async def test_a_pool_whose_worker_died_is_replaced_not_a_451_forever(
    dns_server: DnsServer,
) -> None:
    raw = publish_sender(dns_server).sign(message())
    pool = process_pool()
    authenticator = Authenticator(
        CachingResolver([dns_server.address], timeout=2.0), SERVER, pool, new_executor=process_pool
    )
    try:
        first = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
        assert first.action == Action.ACCEPT
        for worker in list(pool._processes.values()):
            os.kill(worker.pid, signal.SIGKILL)  # the OOM killer, say
            worker.join(10)
        again = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
        assert (again.action, again.details["dkim"][0]["result"]) == (Action.ACCEPT, "pass")
        assert authenticator._executor is not pool
    finally:
        authenticator.close()
        pool.shutdown(wait=True)


async def test_two_thousand_mime_levels_are_a_verdict_with_one_log_line(
    dns_server: DnsServer, authenticator: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    """The stdlib recurses per MIME level; that is the message's fault, not a 451."""
    publish_sender(dns_server, "v=DMARC1; p=none")
    body = b"deep\r\n"
    for level in range(2000):
        body = b'Content-Type: multipart/mixed; boundary="%d"\r\n\r\n--%d\r\n%s\r\n--%d--\r\n' % (
            level, level, body, level,
        )  # fmt: skip
    raw = message().split(b"Content-Type:")[0] + body
    caplog.set_level("INFO", logger="mail.verify")
    verdict = await authenticator.verify(raw, envelope(), MAILBOX, PolicyConfig())
    assert verdict.action == Action.ACCEPT and verdict.details["dmarc"]["result"] == "pass"
    [line] = [r for r in caplog.records if r.name == "mail.verify"]
    assert line.getMessage() == "forwarding permerror (malformed_input: RecursionError)"
    assert line.exc_info is None
