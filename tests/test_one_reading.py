"""One message, one reading: the author DMARC judged is the ticket's requester.

A differential test over the test corpora, and a Hypothesis test that mutates
their messages (line endings, whitespace, header order and case, encodings, a
BOM, truncation, binary tails, long lines, deep nesting): the DATA path — the
one header reading, then verification — never raises and never defers
(``451``), and whatever it accepts, the ticket parser reads the same author
from the bytes that are stored. (Repeatable draws come from the suite's Hypothesis
profile, see tests/support/stores.py.)
"""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.smtp.resolver import CachingResolver
from policy.config.model import MailboxConfig, PolicyConfig
from policy.message.headerblock import HeaderTooLarge, canonical, read
from policy.message.mime import parse_message
from policy.message.parsed import ParsedMessage
from policy.verify.authenticate import Authenticator
from policy.verify.authresults import strip_ours
from policy.verify.verdict import Action, Envelope, Verdict
from tests.support.corpus import cases, realworld
from tests.support.dnsserver import DnsServer

MAILBOX = MailboxConfig(channel="helpdesk", name="Support", address="support@example.com")
HOST = "mx.firstline.test"
MESSAGES = [(c.raw, c.envelope_sender) for c in cases.CASES] + [
    (c.raw, c.mail_from) for c in realworld.CASES
]
NAMES = [c.name for c in cases.CASES] + [f"realworld-{c.name}" for c in realworld.CASES]


def judge(dns: DnsServer, raw: bytes, mail_from: str) -> tuple[Verdict, ParsedMessage | None]:
    """The DATA path as the listener runs it, and the batch's parse of what it stores."""

    async def verify(data: bytes) -> Verdict:
        authenticator = Authenticator(CachingResolver([dns.address], timeout=2.0), HOST)
        envelope = Envelope("192.0.2.1", None, "mx.sender.test", mail_from, (MAILBOX.address,))
        # Manual forwards accepted: more messages reach the parser to be compared.
        policy = PolicyConfig(manual_forward="accept")
        return await authenticator.verify(data, envelope, MAILBOX, policy)

    try:
        data = canonical(raw)
    except HeaderTooLarge:
        return asyncio.run(verify(raw)), None
    verdict = asyncio.run(verify(data))
    if verdict.action not in (Action.ACCEPT, Action.QUARANTINE):
        return verdict, None
    results = verdict.authentication_results or ""
    stored = f"Authentication-Results: {results}\r\n".encode() + strip_ours(data, HOST)
    return verdict, parse_message(stored, mail_from=mail_from)


def assert_one_author(verdict: Verdict, parsed: ParsedMessage | None) -> None:
    assert verdict.action is not Action.TEMPFAIL, verdict
    if parsed is None:
        assert verdict.action is Action.REJECT, verdict  # refused: nothing filed
        return
    author = verdict.details["author"]
    if author:
        assert parsed.from_ is not None and parsed.from_.address == author
        domain = author.rpartition("@")[2]
        assert verdict.details["dmarc"]["author"] == domain
        results = " ".join((verdict.authentication_results or "").split())
        assert f"header.from={domain}" in results
    else:
        assert parsed.from_ is None and parsed.author_problem == "null_author"
        assert verdict.reason == "null_author_bounce"


@pytest.mark.parametrize(("raw", "mail_from"), MESSAGES, ids=NAMES)
def test_the_author_dmarc_judged_is_the_requester(
    dns_server: DnsServer, raw: bytes, mail_from: str
) -> None:
    verdict, parsed = judge(dns_server, raw, mail_from)
    assert_one_author(verdict, parsed)


def test_the_header_reading_is_idempotent_over_the_corpora() -> None:
    for raw, _ in MESSAGES:
        block = read(raw)
        again = read(block.raw)
        assert (again.raw, again.fields, again.body_offset) == (
            block.raw,
            block.fields,
            block.body_offset,
        )


# --- mutations ---------------------------------------------------------------------

_FIELD_START = re.compile(rb"(?m)^([A-Za-z-]+):")


def _header_and_body(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    return (head, body) if sep else (raw, b"")


def _reorder(raw: bytes, seed: int) -> bytes:
    head, body = _header_and_body(raw)
    fields = re.split(rb"\r\n(?=[^ \t])", head)
    fields = fields[seed % len(fields) :] + fields[: seed % len(fields)]
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def _nest(raw: bytes, depth: int) -> bytes:
    head, body = _header_and_body(raw)
    for level in range(depth):
        body = b"--L%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n--L%d--\r\n" % (level, body, level)
        body = b'Content-Type: multipart/mixed; boundary="L%d"\r\n\r\n%s' % (level, body)
    return head + b"\r\n" + body


MUTATIONS = {
    "lf": lambda raw, n: raw.replace(b"\r\n", b"\n"),
    "some-lf": lambda raw, n: raw.replace(b"\r\n", b"\n", n % 6),
    "lone-cr": lambda raw, n: raw.replace(b"\r\n", b"\r", 1 + n % 3),
    "bom": lambda raw, n: b"\xef\xbb\xbf" + raw,
    "space-before-colon": lambda raw, n: _FIELD_START.sub(rb"\1 :", raw, count=1 + n % 4),
    "upper-names": lambda raw, n: _FIELD_START.sub(lambda m: m.group(1).upper() + b":", raw),
    "lower-names": lambda raw, n: _FIELD_START.sub(lambda m: m.group(1).lower() + b":", raw),
    "reorder": _reorder,
    "truncate": lambda raw, n: raw[: n % (len(raw) + 1)],
    "binary-tail": lambda raw, n: raw + bytes(range(n % 256, 256)) + b"\r\n",
    "long-line": lambda raw, n: raw.replace(
        b"\r\n\r\n", b"\r\n\r\n" + b"x" * (n * 97) + b"\r\n", 1
    ),
    "long-header": lambda raw, n: b"X-Long: " + b"y" * (n * 31) + b"\r\n" + raw,
    "folded-flood": lambda raw, n: b"X-Fold: a\r\n" + b" b\r\n" * (n * 50) + raw,
    "nest": lambda raw, n: _nest(raw, n % 60),
    "encoded-from": lambda raw, n: raw.replace(b"From: ", b"From: =?utf-8?q?=3C=40?= ", 1),
    "8bit-name": lambda raw, n: b"X-N\xc3\xa4me: v\r\n" + raw,
    "nul": lambda raw, n: raw.replace(b":", b":\x00", 1),
    "insert": lambda raw, n: raw[: n % (len(raw) + 1)] + b"\r\nFrom: <x@y.example>\n" + raw[n:],
    "whitespace": lambda raw, n: raw.replace(b" ", b"\t", n % 5).replace(b": ", b":", n % 3),
}


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    message=st.sampled_from(MESSAGES),
    mutations=st.lists(
        st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 5000)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_mail_never_defers_never_raises_never_files_an_unjudged_requester(
    dns_server: DnsServer, message: tuple[bytes, str], mutations: list[tuple[str, int]]
) -> None:
    raw, mail_from = message
    for name, n in mutations:
        raw = MUTATIONS[name](raw, n)
    verdict, parsed = judge(dns_server, raw, mail_from)
    assert_one_author(verdict, parsed)
