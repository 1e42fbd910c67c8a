"""The spoofs of issue 11, end to end against a ``p=reject`` domain.

victim.example publishes ``p=reject``; its CEO has a ticket (a signed message).
Each spoof arrives over a raw SMTP connection (so bare CRs and LFs arrive as
written) asking to join that ticket with ``[#N]``, then one batch runs. Each
must be refused at DATA, quarantined, or become a ticket message whose From
is not the CEO and which sits on a ticket of its own. Where the outcome is
deliberate, the test says which.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.smtp.verification import configured_verifier
from policy.antivirus import EICAR
from policy.config.model import Config
from storage.models import Attachment
from tests.support.dnsserver import DnsServer
from tests.support.mailflow import queue_outcomes, tickets, transmit
from tests.support.server import running
from tests.support.signing import Signer

CEO = "ceo@victim.example"
EVE = "eve@attacker.example"
TOKEN = "{token}"


@dataclass(frozen=True)
class Spoof:
    name: str
    raw: bytes
    # "refused" (550 at DATA), "quarantined", "no ticket", or the From address
    # the ticket message must show (never the CEO).
    expect: str
    mail_from: str = CEO


def lines(*fields: str, end: str = "\r\n", body: str = "Please wire the money today.") -> bytes:
    return (end.join(fields) + end + end + body + "\r\n").encode("utf-8")


def spoof(name: str, first: str, *more: str, end: str = "\r\n") -> bytes:
    """A header block starting with ``first`` (where the trick is) and the usual fields."""
    return lines(
        first,
        *more,
        "To: support@example.com",
        f"Subject: Re: [#{TOKEN}] Urgent payment",
        f"Message-ID: <spoof-{name}@attacker.example>",
        end=end,
    )


NESTED = "(" * 1000 + ")" * 1000
SPOOFS = [
    Spoof("bracket", spoof("bracket", f"From: CEO <{CEO}[>"), "refused"),
    Spoof("backslash", spoof("backslash", f"From: {CEO}\\"), "refused"),
    Spoof(
        "encoded-angle",
        spoof("encoded-angle", f"From: =?utf-8?q?=3Cceo=40victim.example=3E?= {EVE}"),
        "refused",
    ),
    Spoof(
        "encoded-display",
        spoof("encoded-display", f"From: =?utf-8?q?=3Cceo=40victim.example=3E?= <{EVE}>"),
        EVE,
    ),
    Spoof("display-address", spoof("display-address", f"From: {CEO} <{EVE}>"), EVE),
    Spoof("angle-then-text", spoof("angle-then-text", f"From: <{CEO}> {EVE}"), "refused"),
    Spoof("two-from", spoof("two-from", f"From: {EVE}", f"From: CEO <{CEO}>"), "refused"),
    Spoof("two-mailboxes", spoof("two-mailboxes", f"From: {EVE}, CEO <{CEO}>"), "refused"),
    # A bare CR in an LF-ended block, a bare LF before CRLF lines: no reader sees
    # the hidden From as a field.
    Spoof(
        "lone-cr-lf-block",
        spoof("lone-cr-lf-block", f"From: {EVE}", f"X-Pad: a\rFrom: CEO <{CEO}>", end="\n"),
        EVE,
    ),
    Spoof(
        "lone-cr-only-from",
        spoof("lone-cr-only-from", f"X-Pad: a\rFrom: <{CEO}>", end="\n"),
        "refused",
    ),
    Spoof(
        "lone-lf-crlf-block",
        spoof("lone-lf-crlf-block", f"X-A: a\nFrom: <{CEO}>", f"From: {EVE}"),
        EVE,
    ),
    Spoof("lone-lf-only-from", spoof("lone-lf-only-from", f"X-A: a\nFrom: <{CEO}>"), "refused"),
    # No From address parses: the envelope sender (the CEO here) is never the requester.
    Spoof("trailing-dot", spoof("trailing-dot", "From: x@nodmarc.example."), "x@nodmarc.example"),
    Spoof("nested-comment-from", spoof("nested-comment-from", f"From: {NESTED} {EVE}"), "refused"),
    Spoof("no-from", spoof("no-from", "X-Nothing: here"), "refused"),
    # The From is the CEO's, so DMARC judges victim.example: p=reject.
    Spoof(
        "nested-comment-to",
        spoof("nested-comment-to", f"From: CEO <{CEO}>", f"Cc: {NESTED} {EVE}"),
        "refused",
    ),
    # A null author is a bounce: it can only join the ticket of mail we sent.
    Spoof("null-from", spoof("null-from", "From: <>"), "no ticket"),
    Spoof("null-daemon", spoof("null-daemon", "From: MAILER-DAEMON (CEO)"), "no ticket"),
]


def attachment_mail(name: str, first: str, parts: list[tuple[str, bytes]], end: str) -> bytes:
    """A multipart whose real Content-Type may sit behind a lone-break trick."""
    body = b""
    for filename, data in parts:
        body += (
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Disposition: attachment; filename*=utf-8''{filename}\r\n".encode()
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(data)
            + b"\r\n"
        )
    head = end.join(
        [
            f"From: {EVE}",
            "To: support@example.com",
            "Subject: invoice",
            f"Message-ID: <spoof-{name}@attacker.example>",
            "MIME-Version: 1.0",
            first,
        ]
    )
    return head.encode() + end.encode() * 2 + body + b"--b--\r\n"


MALWARE = [
    ("invoice.exe", b"MZ" + b"\x00" * 0x3A + b"\x40\x00\x00\x00PE\x00\x00"),
    ("eicar.com", EICAR),
]
MULTIPART = 'Content-Type: multipart/mixed; boundary="b"'
ATTACHMENTS = [
    Spoof(
        "plain-multipart",
        attachment_mail("plain-multipart", MULTIPART, MALWARE, "\r\n"),
        "quarantined",
        EVE,
    ),
    Spoof(
        "lone-lf-content-type",
        attachment_mail("lone-lf-content-type", f"X-A: a\n{MULTIPART}", MALWARE, "\r\n"),
        EVE,
        EVE,
    ),
    Spoof(
        "text-then-lone-lf-content-type",
        attachment_mail(
            "text-then-lone-lf-content-type",
            f"Content-Type: text/plain\r\nX-A: a\n{MULTIPART}",
            MALWARE,
            "\r\n",
        ),
        EVE,
        EVE,
    ),
    Spoof(
        "lone-cr-content-type",
        attachment_mail("lone-cr-content-type", f"X-A: a\r{MULTIPART}", MALWARE, "\n"),
        EVE,
        EVE,
    ),
    *[
        Spoof(
            f"invisible-{i}",
            attachment_mail(f"invisible-{i}", MULTIPART, [(n, b"x")], "\r\n"),
            "quarantined",
            EVE,
        )
        for i, n in enumerate(["update.j%E2%80%8Bs", "run.bat%C2%AD", "setup.hta%EF%BB%BF"])
    ],
]


def test_spoofs_never_file_the_ceo_as_requester(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    dns_server.add("victim.example", "TXT", "v=spf1 -all")
    dns_server.add("_dmarc.victim.example", "TXT", "v=DMARC1; p=reject")
    signer = Signer("victim.example").publish(dns_server)
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 2.0})
    genuine = signer.sign(
        lines(
            f"From: CEO <{CEO}>",
            "To: support@example.com",
            "Subject: Payment run",
            "Message-ID: <genuine@victim.example>",
        )
    )
    with running(config, verifier_factory=configured_verifier) as server:
        client = server.raw()
        client.cmd(b"EHLO mx.test")
        assert transmit(client, genuine, CEO).startswith("250 ")
        client.close()
        server.process()
        [ceo_ticket] = tickets(server)
        assert ceo_ticket["requester"] == CEO
        token = str(ceo_ticket["id"])
        client = server.raw()
        client.cmd(b"EHLO mx.test")
        replies = {
            s.name: transmit(client, s.raw.replace(TOKEN.encode(), token.encode()), s.mail_from)
            for s in SPOOFS + ATTACHMENTS
        }
        client.close()
        server.process()
        entries = {stored.header_message_id: entry for entry, stored in queue_outcomes(server)}
        shown = tickets(server)
        with Session(server.engine) as session:
            stored_files = [(a.filename, a.data) for a in session.scalars(select(Attachment))]

    where = {m["message_id"]: (t, m) for t in shown for m in t["messages"]}
    for case in SPOOFS + ATTACHMENTS:
        reply = replies[case.name]
        message_id = f"spoof-{case.name}@attacker.example"
        if case.expect == "refused":
            assert reply.startswith("550 5.7.1 "), (case.name, reply)
            continue
        assert reply.startswith("250 "), (case.name, reply)
        entry = entries[message_id]
        if case.expect == "quarantined":
            assert entry.state.value == "quarantined", case.name
            continue
        assert entry.state.value == "done", case.name
        if case.expect == "no ticket":
            assert f"<{message_id}>" not in where, case.name
            continue
        ticket, message = where[f"<{message_id}>"]
        assert message["from"] == case.expect != CEO, case.name
        assert ticket["id"] != ceo_ticket["id"] and ticket["requester"] == case.expect, case.name
    # Whatever the trick, nothing executable or infected was stored to be served.
    for filename, data in stored_files:
        assert not filename.lower().endswith((".exe", ".com", ".js", ".bat", ".hta")), filename
        assert EICAR not in data, filename
