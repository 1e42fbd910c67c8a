"""Webhook channels end to end: mail in, a real HTTP helpdesk on loopback receives events.

The receiver verifies every signature with the few lines ``docs/webhooks.md``
gives integrators, answers as each test scripts it (500, a hang past the
timeout, 410) and counts what arrives, so "once each", "retried", "dead after
the window" and "replayed" are observed on the wire, not in our tables only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.ops.metrics import scrape_registry
from ingest.outbound.replies import queue_reply, send_due_replies
from ingest.smtp.verification import configured_verifier
from policy.antivirus import EICAR
from policy.config.model import Config
from storage.models import EventState, Reply, WebhookEvent, utcnow
from storage.outbox import reply_view
from storage.retention import purge
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.helpdesk import SECRET, Receiver, file_mail, poke, wait_for, webhook
from tests.support.mailflow import deliver, tickets
from tests.support.relay import PASSWORD, USER, Relays, free_port
from tests.support.server import ServerThread, running
from tests.support.signing import message


@pytest.fixture
def desk(
    make_config: Callable[..., Config], receiver: Receiver
) -> Callable[..., Iterator[ServerThread]]:
    def make(**channel: Any) -> Any:
        config = make_config(channels=[webhook(receiver, **channel), {"name": "sales-desk"}])
        return running(config)

    return make


def mail(
    subject: str, message_id: str, *, reply_to: str | None = None, attach: bool = False
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@customer.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    if reply_to:
        msg["In-Reply-To"] = f"<{reply_to}>"
        msg["References"] = f"<{reply_to}>"
    msg.set_content(f"Text of {subject}.\n")
    if attach:
        msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                           filename="invoice.pdf")  # fmt: skip
    return msg.as_bytes(policy=policy.SMTP)


def stored_events(server: ServerThread) -> list[WebhookEvent]:
    with Session(server.engine) as session:
        return list(session.scalars(select(WebhookEvent).order_by(col(WebhookEvent.id))).all())


def test_each_event_arrives_once_signed_in_order_with_the_ticket(
    desk: Callable[..., Any], receiver: Receiver
) -> None:
    with desk() as server:
        file_mail(server, mail("Printer on fire", "q1@customer.example", attach=True))
        file_mail(server, mail("Re: Printer on fire", "q2@customer.example",
                               reply_to="q1@customer.example"))  # fmt: skip
        file_mail(server, mail("Lunch?", "x1@customer.example"), rcpt="sales@example.org")
        wait_for(lambda: receiver.of_type("ticket.message_added"), "the follow-up's event")
        server.process()  # nothing new: nothing more is sent
        poke(server)
        wait_for(
            lambda: all(e.state == EventState.DELIVERED for e in stored_events(server)),
            "every event delivered",
        )
        # The sales desk is a local channel: its ticket exists, no event was queued for it.
        mailboxes = {t["mailbox"] for t in tickets(server)}
        assert mailboxes == {"support@example.com", "sales@example.org"}
        assert {e.channel for e in stored_events(server)} == {"helpdesk"}

    assert [d.type for d in receiver.deliveries] == ["ticket.created", "ticket.message_added"]
    assert all(d.verified for d in receiver.deliveries)
    assert len({d.id for d in receiver.deliveries}) == 2
    created, added = (d.event for d in receiver.deliveries)
    assert created["channel"] == "helpdesk" and created["created_at"]
    ticket = created["data"]["ticket"]
    assert ticket["subject"] == "Printer on fire" and ticket["mailbox"] == "support@example.com"
    [first] = ticket["messages"]
    assert first["text"].startswith("Text of Printer on fire")
    assert first["forwarding"] == "direct" and "authentication_results" in first
    [attachment] = first["attachments"]
    assert attachment["filename"] == "invoice.pdf"
    assert attachment["download_url"] == f"/api/v1/attachments/{attachment['id']}"
    assert added["data"]["ticket"]["id"] == ticket["id"]
    assert [m["message_id"] for m in added["data"]["ticket"]["messages"]] == [
        first["message_id"], added["data"]["ticket"]["messages"][1]["message_id"]
    ]  # fmt: skip
    assert added["data"]["ticket_message_id"] == added["data"]["ticket"]["messages"][1]["id"]


def test_5xx_and_timeouts_are_retried_and_the_ticket_s_next_event_waits(
    desk: Callable[..., Any], receiver: Receiver
) -> None:
    receiver.script = [500, "hang", 503]
    with desk(timeout=2) as server:  # "hang" outlasts it; a loaded machine answers within it
        deliver(server, mail("Printer on fire", "q1@customer.example"))
        deliver(server, mail("Re: Printer on fire", "q2@customer.example",
                             reply_to="q1@customer.example"))  # fmt: skip
        server.process()
        poke(server)
        wait_for(lambda: receiver.of_type("ticket.message_added"), "the second event")
        receiver.release.set()
        wait_for(
            lambda: all(e.state == EventState.DELIVERED for e in stored_events(server)),
            "both delivered",
        )
        created, added = stored_events(server)

    answers = [(d.type, d.answered) for d in receiver.deliveries]
    assert answers == [
        ("ticket.created", 500), ("ticket.created", "hang"), ("ticket.created", 503),
        ("ticket.created", 200), ("ticket.message_added", 200),
    ]  # fmt: skip
    assert len({d.id for d in receiver.of_type("ticket.created")}) == 1  # one idempotency key
    assert all(d.verified for d in receiver.deliveries)
    assert created.attempts == 4 and added.attempts == 1


def test_a_helpdesk_trickling_its_answer_gets_the_total_timeout(
    desk: Callable[..., Any], receiver: Receiver
) -> None:
    receiver.script = ["trickle"]
    with desk(timeout=1) as server:
        deliver(server, mail("Printer on fire", "slow@customer.example"))
        server.process()
        poke(server)
        wait_for(lambda: len(receiver.deliveries) >= 2, "the retry after the timeout")
        wait_for(
            lambda: all(e.state == EventState.DELIVERED for e in stored_events(server)),
            "delivered on the retry",
        )
        [event] = stored_events(server)
    # Not delivered by the trickle (which would have ended with a 200 after ~10 s):
    # retried. (A loaded machine may need more than one retry within 1 s.)
    answers = [d.answered for d in receiver.deliveries]
    assert answers[0] == "trickle" and answers[-1] == 200 and event.attempts == len(answers)


def test_410_is_dead_at_once_and_events_retry_replays_it(
    desk: Callable[..., Any], receiver: Receiver, tmp_path: Path, db_url: str
) -> None:
    receiver.script = [410]
    with desk() as server:
        file_mail(server, mail("Printer on fire", "q1@customer.example"))
        wait_for(lambda: stored_events(server)[0].state == EventState.DEAD, "dead letter")
        path = write_config(tmp_path / "firstline.yaml", db_url,
                            channels=[webhook(receiver), {"name": "sales-desk"}])  # fmt: skip
        [dead] = json_lines(run("events", "list", "--failed", "--json", config=path))
        assert dead["type"] == "ticket.created" and dead["last_status"] == 410
        assert dead["last_error"] == "HTTP 410" and dead["attempts"] == 1
        assert len(receiver.deliveries) == 1  # a 4xx is not retried

        replayed = run("events", "retry", dead["event_id"], config=path)
        assert replayed.exit_code == 0 and f"re-queued 1 event(s): {dead['id']}" in replayed.stdout
        poke(server)
        wait_for(lambda: stored_events(server)[0].state == EventState.DELIVERED, "replay")
        assert json_lines(run("events", "list", "--failed", "--json", config=path)) == []

    assert [d.answered for d in receiver.deliveries] == [410, 200]
    assert receiver.deliveries[0].id == receiver.deliveries[1].id == dead["event_id"]


def test_dead_letter_after_the_retry_window_then_retry_failed(
    desk: Callable[..., Any], receiver: Receiver, tmp_path: Path, db_url: str
) -> None:
    receiver.default = 503
    # The window opens when the event is queued: under a loaded machine the first
    # attempt can come a second later, and the test needs a second attempt.
    with desk(retry_window=3, backoff=0.05) as server:
        file_mail(server, mail("Printer on fire", "q1@customer.example"))
        wait_for(lambda: stored_events(server)[0].state == EventState.DEAD, "dead letter")
        [event] = stored_events(server)
        assert event.attempts >= 2 and event.last_status == 503
        assert event.last_error is not None and "gave up after" in event.last_error
        tried = len(receiver.deliveries)
        assert tried == event.attempts
        scraped = generate_latest(scrape_registry(server.engine)).decode()
        assert 'firstline_webhook_events{state="dead"} 1.0' in scraped

        # A dead event does not hold the ticket's later events back.
        receiver.default = 200
        file_mail(server, mail("Re: Printer on fire", "q2@customer.example",
                               reply_to="q1@customer.example"))  # fmt: skip
        wait_for(lambda: receiver.of_type("ticket.message_added"), "the next event")

        path = write_config(tmp_path / "firstline.yaml", db_url,
                            channels=[webhook(receiver), {"name": "sales-desk"}])  # fmt: skip
        replayed = run("events", "retry", "--failed", config=path)
        assert "re-queued 1 event(s)" in replayed.stdout
        poke(server)
        wait_for(lambda: stored_events(server)[0].state == EventState.DELIVERED, "replay")
        listed = json_lines(run("events", "list", "--all", "--json", config=path))
        assert [(e["type"], e["state"]) for e in listed] == [
            ("ticket.created", "delivered"), ("ticket.message_added", "delivered"),
        ]  # fmt: skip

        # Delivered events hold copies of tickets: retention forgets them.
        later = utcnow() + timedelta(days=31)
        assert purge(server.engine, days=30, now=utcnow()).webhook_events == 0
        assert purge(server.engine, days=30, now=later).webhook_events == 2
        assert stored_events(server) == []

    created = receiver.of_type("ticket.created")
    assert len(created) == tried + 1 and created[-1].answered == 200


def test_a_hung_helpdesk_blocks_neither_ingestion_nor_the_batch_nor_other_tickets(
    desk: Callable[..., Any], receiver: Receiver
) -> None:
    receiver.script = ["hang"]
    with desk(timeout=30) as server:
        file_mail(server, mail("Stuck", "s1@customer.example"))
        wait_for(lambda: receiver.hanging == 1, "the helpdesk to hang")
        file_mail(server, *(mail(f"Other {n}", f"o{n}@customer.example") for n in range(3)))
        # Mail kept being accepted and filed while the first request hangs …
        assert len(tickets(server)) == 4
        # … and the other tickets' events went through meanwhile.
        wait_for(lambda: len(receiver.deliveries) == 4, "the other tickets' events")
        assert receiver.hanging == 1 and not receiver.release.is_set()
        receiver.release.set()
        wait_for(
            lambda: all(e.state == EventState.DELIVERED for e in stored_events(server)),
            "everything delivered",
        )
    assert len({d.id for d in receiver.deliveries}) == 4


def test_quarantine_makes_an_event_and_refusals_only_for_channels_that_opt_in(
    make_config: Callable[..., Config], receiver: Receiver, dns_server: DnsServer
) -> None:
    dns_server.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
    dns_server.add("_dmarc.refused.example", "TXT", "v=DMARC1; p=reject")
    wants_all = webhook(receiver, events=["message.quarantined", "message.rejected"])
    config = make_config(
        dns={"nameservers": [dns_server.address], "timeout": 5},
        channels=[wants_all, {"name": "sales-desk", "type": "webhook", "url": receiver.url,
                              "secret": SECRET}],
    )  # fmt: skip
    with running(config, verifier_factory=configured_verifier) as server:
        for sender, rcpt in [("held.example", "support@example.com"),
                             ("refused.example", "support@example.com"),
                             ("refused.example", "sales@example.org")]:  # fmt: skip
            raw = message(sender=f"Bob <bob@{sender}>", to=rcpt, subject=f"from {sender}")
            with server.smtp() as client:
                try:
                    client.sendmail(f"bob@{sender}", [rcpt], raw)
                except Exception as refused:  # the DMARC reject
                    assert "550" in str(refused) or "5.7" in str(refused)
        server.flush()
        poke(server)
        wait_for(lambda: len(receiver.deliveries) >= 2, "quarantine and refusal events")
        assert {e.channel for e in stored_events(server)} == {"helpdesk"}

    by_type = {d.type: d.event for d in receiver.deliveries}
    assert set(by_type) == {"message.quarantined", "message.rejected"}
    held = by_type["message.quarantined"]["data"]["message"]
    assert held["subject"] == "from held.example" and held["reason"] == "dmarc_quarantine"
    refused = by_type["message.rejected"]["data"]["rejection"]
    assert (
        refused["mailbox"] == "support@example.com"
        and refused["mail_from"] == "bob@refused.example"
    )
    # sales-desk takes the default event types: its refusal made no event.
    assert all(d.verified for d in receiver.deliveries)


def test_reply_outcomes_and_a_virus_in_the_batch_are_events(
    make_config: Callable[..., Config], receiver: Receiver, relays: Relays
) -> None:
    port, relay = relays.start("starttls")
    smtp = {
        "host": "127.0.0.1", "port": port, "account": USER, "password": PASSWORD,
        "encryption": "starttls", "ca_file": str(relays.ca_file), "timeout": 2,
    }  # fmt: skip
    config = make_config(
        channels=[webhook(receiver, events=["reply.sent", "reply.failed",
                                            "message.quarantined", "message.rejected"]),
                  {"name": "sales-desk"}],
        mailboxes=[{"channel": "helpdesk", "name": "Support", "address": "support@example.com",
                    "smtp": smtp}],
    )  # fmt: skip
    with running(config) as server:
        file_mail(server, mail("Printer on fire", "q1@customer.example"))
        [ticket] = tickets(server)
        with Session(server.engine) as session, session.begin():
            sent = queue_reply(session, config, ticket["id"], text="On it.\n").reply_id
        server.call(send_due_replies(server.engine, config, owner="test"))
        relay.data_replies = ["550 5.7.1 relaying denied"]
        with Session(server.engine) as session, session.begin():
            refused = queue_reply(session, config, ticket["id"], text="Again.\n").reply_id
        server.call(send_due_replies(server.engine, config, owner="test"))

        virus = EmailMessage()
        virus["From"], virus["To"], virus["Subject"] = "m@bad.example", "support@example.com", "hi"
        virus.set_content("see attachment\n")
        virus.add_attachment(EICAR, maintype="text", subtype="plain", filename="eicar.com.txt")
        file_mail(server, virus.as_bytes(policy=policy.SMTP))
        poke(server)
        wait_for(lambda: len(receiver.deliveries) == 4, "four events")

        # The sent reply bounces later: it failed after all.
        sent_id = shown_reply(server, sent)["message_id"]
        deliver(server, bounce_of(sent_id), mail_from="")
        server.process()
        poke(server)
        wait_for(lambda: len(receiver.of_type("reply.failed")) == 2, "the bounce's event")
        # A second report on the same reply (another recipient's) is filed, but the
        # reply had already failed: no second reply.failed event is made.
        deliver(server, bounce_of(sent_id, "dsn-2"), mail_from="")
        assert server.process().tickets == 1
        with Session(server.engine) as session:
            types = session.scalars(select(col(WebhookEvent.type))).all()
        assert types.count("reply.failed") == 2

    by_type = {d.type: d.event["data"] for d in receiver.deliveries}
    assert set(by_type) == {"reply.sent", "reply.failed", "message.quarantined", "message.rejected"}
    assert by_type["reply.sent"]["reply"]["id"] == sent
    assert by_type["reply.sent"]["reply"]["state"] == "sent"
    refusal, bounced = (d.event["data"]["reply"] for d in receiver.of_type("reply.failed"))
    assert refusal["id"] == refused and "550 5.7.1" in refusal["last_error"]
    assert bounced["id"] == sent and bounced["error_class"] == "bounce"
    assert by_type["reply.sent"]["ticket"]["id"] == ticket["id"]
    assert by_type["message.quarantined"]["message"]["reason"].startswith("virus: EICAR")
    rejection = by_type["message.rejected"]["rejection"]
    assert rejection["stage"] == "BATCH" and rejection["id"] is not None


def shown_reply(server: ServerThread, reply_id: int) -> dict[str, Any]:
    with Session(server.engine) as session:
        row = session.get(Reply, reply_id)
        assert row is not None
        return reply_view(row).dump()


def bounce_of(message_id: str, report_id: str = "dsn-1") -> bytes:
    """An RFC 3464 report that our reply could not be delivered."""
    return (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{report_id}@mx.customer.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        "Final-Recipient: rfc822; alice@customer.example\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nSubject: Re: Printer on fire\r\n\r\n--B--\r\n"
    ).encode()


def test_a_helpdesk_that_is_down_is_retried_until_the_window_closes(
    make_config: Callable[..., Config], receiver: Receiver
) -> None:
    down = webhook(receiver, url=f"http://127.0.0.1:{free_port()}/hooks", retry_window=1.0)
    with running(make_config(channels=[down, {"name": "sales-desk"}])) as server:
        file_mail(server, mail("Printer on fire", "q1@customer.example"))
        wait_for(lambda: stored_events(server)[0].state == EventState.DEAD, "dead letter")
        [event] = stored_events(server)
    assert event.attempts >= 2 and event.last_status is None
    assert event.last_error is not None and event.last_error.startswith("ConnectError")
    assert "gave up after" in event.last_error
