""" "Where is my mail?": trace finds a message in every state it can be in."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from storage import mailqueue as queue
from storage.mailtrace import trace
from storage.models import QueueEntry, StoredMessage, TicketMessage
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.signing import message


def message_id(raw: bytes) -> str:
    found = re.search(rb"^Message-ID: <([^>]+)>", raw, re.MULTILINE)
    assert found is not None
    return found.group(1).decode()


@pytest.fixture
def verifying(make_config: Callable[..., Config], dns_server: DnsServer) -> Iterator[ServerThread]:
    dns_server.add("_dmarc.refused.example", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
    config = make_config(
        dns={"nameservers": [dns_server.address], "timeout": 5}, batch={"max_attempts": 1}
    )
    with running(config, verifier_factory=configured_verifier) as server:
        yield server


def send(server: ServerThread, domain: str, subject: str) -> tuple[str, int]:
    raw = message(sender=f"Alice <alice@{domain}>", to="support@example.com", subject=subject)
    with server.smtp() as client:
        client.ehlo("mx.sender.test")
        client.mail(f"alice@{domain}")
        client.rcpt("support@example.com")
        code, _ = client.data(raw)
    return message_id(raw), code


def traced(server: ServerThread, wanted: str) -> dict[str, object]:
    server.flush()
    with Session(server.engine) as session:
        return trace(session, wanted)


def states(found: dict[str, object]) -> list[str]:
    return [item["status"] for item in found["status"]]  # type: ignore[attr-defined]


def test_trace_in_every_state(verifying: ServerThread, tmp_path: Path, db_url: str) -> None:
    refused, code = send(verifying, "refused.example", "refused")
    assert code == 550
    held, _ = send(verifying, "held.example", "held")
    filed, _ = send(verifying, "fine.example", "filed")
    broken, _ = send(verifying, "fine.example", "broken")
    with Session(verifying.engine) as session, session.begin():
        # A message whose raw bytes vanished cannot be filed: it fails (max_attempts 1).
        session.execute(
            update(StoredMessage)
            .where(StoredMessage.header_message_id == broken)  # type: ignore[arg-type]
            .values(raw=None)
        )
    verifying.process()
    waiting, _ = send(verifying, "fine.example", "waiting")

    assert states(traced(verifying, refused)) == ["rejected at DATA: dmarc_reject"]
    assert states(traced(verifying, f"<{held}>")) == ["quarantined: dmarc_quarantine"]
    with Session(verifying.engine) as session:
        ticket_id = session.scalars(
            select(TicketMessage.ticket_id).where(TicketMessage.stored_message_id.in_(  # type: ignore[attr-defined]
                select(StoredMessage.id).where(StoredMessage.header_message_id == filed)  # type: ignore[arg-type]
            ))
        ).one()  # fmt: skip
    assert states(traced(verifying, filed)) == [f"on ticket {ticket_id}"]
    traced_broken = traced(verifying, broken)
    [failed] = states(traced_broken)
    assert failed.startswith("failed after 1 attempt(s): LookupError: the raw message is gone")
    [refusal] = [e for e in traced_broken["events"] if e["event"] == "rejected"]  # type: ignore[attr-defined]
    assert (refusal["stage"], refusal["reason"]) == ("BATCH", "processing_failed")
    assert refusal["reply"].startswith("failed after 1 attempt(s): LookupError")
    assert states(traced(verifying, waiting)) == ["queued"]
    with Session(verifying.engine) as session, session.begin():
        claims = queue.claim(session, owner="test-worker", limit=10, lease_seconds=60,
                             max_attempts=3)  # fmt: skip
        queue.start(session, claims[0], lease_seconds=60)  # a claim spends no attempt; work does
    assert len(claims) == 1
    assert states(traced(verifying, waiting)) == ["being processed (attempt 1)"]

    by_trace_id = traced(verifying, _trace_id(verifying, filed))
    assert by_trace_id["status"] == traced(verifying, filed)["status"]
    events = [e["event"] for e in traced(verifying, filed)["events"]]  # type: ignore[attr-defined]
    assert events == ["received", "done"]
    rejected = traced(verifying, refused)["events"][0]  # type: ignore[index]
    assert rejected["reply"].startswith("550 5.7.1") and rejected["stage"] == "DATA"

    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    shown = run("trace", f"<{filed}>", config=config_path)
    assert shown.exit_code == 0
    assert f"support@example.com: on ticket {ticket_id}" in shown.stdout
    as_json = json.loads(run("trace", "--json", held, config=config_path).stdout)
    assert as_json["status"][0]["state"] == "quarantined"
    unknown = run("trace", "never-sent@nowhere.example", config=config_path)
    assert unknown.exit_code == 1
    assert "nothing known" in unknown.stdout


def _trace_id(server: ServerThread, header_id: str) -> str:
    with Session(server.engine) as session:
        return session.scalars(
            select(StoredMessage.trace_id).where(StoredMessage.header_message_id == header_id)  # type: ignore[arg-type]
        ).one()


def test_trace_survives_the_purge_of_raw_bytes(server: ServerThread) -> None:
    raw = message(sender="Alice <alice@fine.example>", to="support@example.com")
    with server.smtp() as client:
        client.sendmail("alice@fine.example", ["support@example.com"], raw)
    server.process()
    with Session(server.engine) as session, session.begin():
        session.execute(update(StoredMessage).values(raw=None, purged_at=StoredMessage.received_at))
    found = traced(server, message_id(raw))
    assert [e["event"] for e in found["events"]] == ["received", "raw message purged", "done"]  # type: ignore[attr-defined]
    assert states(found)[0].startswith("on ticket ")
    with Session(server.engine) as session:
        assert session.scalars(select(QueueEntry.state)).one() == "done"


FORWARD_BODY = (
    "Please help this customer.\r\n\r\n---------- Forwarded message ---------\r\n"
    "From: Carol Customer <carol@buyer.example>\r\nDate: Tue, 24 Nov 2026 at 10:00\r\n"
    "Subject: Printer on fire\r\nTo: <bob@fine.example>\r\n\r\nIt burns.\r\n"
)


def forward(server: ServerThread) -> tuple[bytes, int, bytes]:
    raw = message(sender="Bob <bob@fine.example>", to="support@example.com",
                  subject="Fwd: Printer on fire", body=FORWARD_BODY)  # fmt: skip
    with server.smtp() as client:
        client.ehlo("mx.sender.test")
        client.mail("bob@fine.example")
        client.rcpt("support@example.com")
        code, reply = client.data(raw)
    return raw, code, reply


def test_a_refused_manual_forward_names_its_original_sender(
    verifying: ServerThread, tmp_path: Path, db_url: str
) -> None:
    raw, code, reply = forward(verifying)
    assert (code, reply[:24]) == (550, b"5.7.1 Manually forwarded")

    found = traced(verifying, message_id(raw))
    assert states(found) == ["rejected at DATA: manual_forward"]
    [rejected] = found["events"]  # type: ignore[misc]
    assert rejected["forwarded_from"] == "carol@buyer.example"

    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    shown = run("trace", message_id(raw), config=config_path)
    assert "forwarded_from=carol@buyer.example" in shown.stdout
    [listed] = json_lines(run("rejections", "--json", "--reason", "manual_forward",
                              config=config_path))  # fmt: skip
    assert listed["forwarded_from"] == "carol@buyer.example"
    assert listed["verdict"]["forwarding"]["kind"] == "manual"
    detail = run("rejections", "show", str(listed["id"]), config=config_path)
    assert detail.exit_code == 0
    assert "forwarded_from: carol@buyer.example" in detail.stdout


def test_a_held_manual_forward_names_its_original_sender(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 0.5},
                         policy={"manual_forward": "quarantine"})  # fmt: skip
    with running(config, verifier_factory=configured_verifier) as server:
        raw, code, _reply = forward(server)
        assert code == 250
        found = traced(server, message_id(raw))
    assert states(found) == ["quarantined: manual_forward_quarantine"]
    received = next(e for e in found["events"] if e["event"] == "received")  # type: ignore[attr-defined]
    assert received["forwarded_from"] == "carol@buyer.example"
    assert received["verdict"]["forwarding"]["original_sender"] == "carol@buyer.example"


def test_trace_says_why_a_processed_message_made_no_ticket(server: ServerThread) -> None:
    raw = message(sender="Alice <alice@fine.example>", to="support@example.com")
    own = message(
        sender="Support <support@example.com>",
        to="support@example.com",
        extra=(("X-Loop", "support@example.com"),),
    )
    unknown_bounce = (
        b"From: MAILER-DAEMON (Mail Delivery System)\r\nTo: support@example.com\r\n"
        b"Subject: Undelivered Mail\r\nMessage-ID: <dsn-1@mx.elsewhere.example>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="d"\r\n\r\n'
        b"--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; gone@fine.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"\r\n--d\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <never-sent@example.com>\r\n\r\n--d--\r\n"
    )
    with server.smtp() as client:
        client.sendmail("alice@fine.example", ["support@example.com"], raw)
    server.process()
    with server.smtp() as client:
        client.sendmail("alice@fine.example", ["support@example.com"], raw)  # delivered again
        client.sendmail("support@example.com", ["support@example.com"], own)
        client.sendmail("", ["support@example.com"], unknown_bounce)
    server.process()
    with Session(server.engine) as session:
        [first] = session.scalars(select(TicketMessage)).all()
    again = states(traced(server, message_id(raw)))
    assert again == [
        f"on ticket {first.ticket_id}",
        f"on ticket {first.ticket_id}: duplicate of ticket message {first.id}",
    ]
    [came_back] = states(traced(server, message_id(own)))
    assert came_back.startswith("processed, no ticket: our own mail <") and "came back" in came_back
    assert states(traced(server, "dsn-1@mx.elsewhere.example")) == [
        "processed, no ticket: a bounce of mail we never sent"
    ]
