"""The outbox end to end: mail in, ``firstline reply``, the worker sends, the answer threads.

A real server takes the customer's mail over SMTP, the batch files it, the
reply goes out through a loopback relay (aiosmtpd with AUTH and STARTTLS),
and the delivery state is read back through ``tickets show --json``. Time is
passed to the worker explicitly, so retries are tested without waiting.
"""

from __future__ import annotations

import asyncio
import email
import json
import logging
import time
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.ops.metrics import REGISTRY
from ingest.outbound.replies import OutboxResult, _send, send_due_replies
from policy.config.loading import load_config
from policy.config.model import Config
from storage import lease, outbox
from storage.lease import LeaseLost
from storage.models import KnownMessageId, ReplyState, utcnow
from tests.support.cli import run, write_config
from tests.support.mailflow import deliver, tickets
from tests.support.relay import PASSWORD, USER, RecordingHandler, Relays, free_port
from tests.support.server import ServerThread, running

CUSTOMER_MAIL = (
    b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
    b"Subject: Printer on fire\r\nMessage-ID: <q1@customer.example>\r\n"
    b"Date: Mon, 05 Jan 2026 10:00:00 +0000\r\n\r\nIt is really burning.\r\n"
)


class Desk:
    """A running server whose support mailbox sends through a loopback relay."""

    def __init__(self, server: ServerThread, config: Config, path: Path, tmp: Path) -> None:
        self.server = server
        self.config = config
        self.path = path
        self.tmp = tmp

    def ticket_from_customer(self) -> int:
        deliver(self.server, CUSTOMER_MAIL)
        self.server.process()
        [ticket] = tickets(self.server)
        return int(ticket["id"])

    def reply(self, ticket_id: int, text: str = "We are on it.\n", *args: str) -> int:
        body = self.tmp / "body.txt"
        body.write_text(text, encoding="utf-8")
        result = run("reply", str(ticket_id), "--body-file", str(body), *args, config=self.path)
        assert result.exit_code == 0, result.output
        return int(result.stdout.strip())

    def send(self, now: datetime, owner: str = "test-worker") -> OutboxResult:
        return asyncio.run(send_due_replies(self.server.engine, self.config, owner=owner, now=now))

    def shown(self, ticket_id: int) -> dict[str, Any]:
        result = run("tickets", "show", str(ticket_id), "--json", config=self.path)
        assert result.exit_code == 0, result.output
        shown: dict[str, Any] = json.loads(result.stdout)
        return shown


def smtp_settings(relays: Relays, port: int, **changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "account": USER,
        "password": PASSWORD,
        "encryption": "starttls",
        "ca_file": str(relays.ca_file),
        "timeout": 10,
    }
    settings.update(changes)
    return settings


@pytest.fixture
def desk_for(tmp_path: Path, db_url: str, relays: Relays) -> Any:
    started: list[Any] = []

    def make(
        port: int,
        *,
        max_attempts: int = 4,
        worker: bool = False,
        more_mailboxes: tuple[dict[str, Any], ...] = (),
        **smtp: Any,
    ) -> Desk:
        mailbox = {
            "channel": "helpdesk",
            "name": "Example Support",
            "address": "support@example.com",
            "smtp": smtp_settings(relays, port, **smtp),
        }
        path = write_config(
            tmp_path / "config.yaml",
            db_url,
            mailboxes=[mailbox, *more_mailboxes],
            outbox={"max_attempts": max_attempts, "retry_seconds": 60, "interval": 0.05},
        )
        config = load_config(path)
        context = running(config, worker=worker)
        started.append(context)
        return Desk(context.__enter__(), config, path, tmp_path)

    yield make
    for context in started:
        context.__exit__(None, None, None)


@pytest.fixture
def replying(desk_for: Any, relays: Relays) -> Any:
    """A desk with a customer's ticket and one queued reply to it, and the relay's handler."""

    def make(
        handler: RecordingHandler | None = None, port: int | None = None, **options: Any
    ) -> tuple[Desk, int, RecordingHandler]:
        handler = handler or RecordingHandler()
        if port is None:
            port, _ = relays.start("starttls", handler=handler)
        desk: Desk = desk_for(port, **options)
        ticket_id = desk.ticket_from_customer()
        desk.reply(ticket_id)
        return desk, ticket_id, handler

    return make


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_reply_is_delivered_threaded_and_the_answer_comes_back(
    desk_for: Any, relays: Relays
) -> None:
    port, handler = relays.start("starttls")
    desk: Desk = desk_for(port)
    ticket_id = desk.ticket_from_customer()
    reply_id = desk.reply(ticket_id, "We are on it.\n", "--cc", "boss@customer.example")
    assert desk.shown(ticket_id)["replies"][0]["state"] == "queued"

    assert desk.send(utcnow()) == OutboxResult(taken=1, sent=1)
    [received] = handler.received
    assert received.mail_from == "support@example.com"
    assert received.rcpt_tos == ("alice@customer.example", "boss@customer.example")
    msg = parse(received.data)
    assert msg["From"] == "Example Support <support@example.com>"
    assert msg["To"] == "alice@customer.example"
    assert msg["Cc"] == "boss@customer.example"
    assert msg["Subject"] == f"Re: [#{ticket_id}] Printer on fire"
    assert msg["In-Reply-To"] == "<q1@customer.example>"
    assert str(msg["References"]).split() == ["<q1@customer.example>"]
    assert msg["Auto-Submitted"] == "no"
    assert str(msg["Message-ID"]).startswith(f"<ticket-{ticket_id}.reply-{reply_id}.")
    assert msg.get_content() == "We are on it.\n"

    [shown] = desk.shown(ticket_id)["replies"]
    assert shown["id"] == reply_id and shown["state"] == "sent"
    assert shown["message_id"] == msg["Message-ID"]
    assert shown["server_reply"] == "250 2.0.0 Ok: queued as Q1ABC"
    assert shown["relay_queue_id"] == "Q1ABC"
    assert shown["attempts"] == 1

    # The customer answers our reply with a subject of their own: it threads by Message-ID.
    answer = (
        f"From: alice@customer.example\r\nTo: support@example.com\r\nSubject: thanks!\r\n"
        f"Message-ID: <q2@customer.example>\r\nIn-Reply-To: {msg['Message-ID']}\r\n\r\nOk\r\n"
    ).encode()
    deliver(desk.server, answer)
    desk.server.process()
    [ticket] = tickets(desk.server)
    assert [m["message_id"] for m in ticket["messages"]] == [
        "<q1@customer.example>",
        "<q2@customer.example>",
    ]
    # A second reply answers the latest message and carries the whole thread.
    desk.reply(ticket_id, "Glad to help.\n")
    assert desk.send(utcnow()).sent == 1
    second = parse(handler.received[1].data)
    assert second["In-Reply-To"] == "<q2@customer.example>"
    assert str(second["References"]).split() == [
        "<q1@customer.example>",
        msg["Message-ID"],
        "<q2@customer.example>",
    ]


def test_replies_answer_the_customer_not_their_out_of_office(desk_for: Any, relays: Relays) -> None:
    port, handler = relays.start("starttls")
    desk: Desk = desk_for(port)
    ticket_id = desk.ticket_from_customer()
    desk.reply(ticket_id)
    desk.send(utcnow())
    ours = parse(handler.received[0].data)["Message-ID"]
    away = (
        f"From: alice@customer.example\r\nTo: support@example.com\r\n"
        f"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n"
        f"Message-ID: <ooo@customer.example>\r\nIn-Reply-To: {ours}\r\n\r\nAway\r\n"
    ).encode()
    deliver(desk.server, away)
    desk.server.process()
    [ticket] = tickets(desk.server)
    assert [m["auto_reply"] for m in ticket["messages"]] == [False, True]
    desk.reply(ticket_id, "Still on it.\n")
    desk.send(utcnow())
    second = parse(handler.received[1].data)
    assert second["In-Reply-To"] == "<q1@customer.example>"
    # A long References header is folded; what counts is the IDs and their order.
    assert str(second["References"]).split() == ["<q1@customer.example>", ours]


def test_each_mailbox_replies_through_its_own_relay(desk_for: Any, relays: Relays) -> None:
    support_port, support_relay = relays.start("starttls")
    billing_port, billing_relay = relays.start("ssl")
    billing = {
        "channel": "helpdesk",
        "name": "Example Billing",
        "address": "billing@example.com",
        "smtp": smtp_settings(relays, billing_port, encryption="ssl"),
    }
    desk: Desk = desk_for(support_port, more_mailboxes=(billing,))
    support_ticket = desk.ticket_from_customer()
    invoice = CUSTOMER_MAIL.replace(b"q1@", b"q9@").replace(b"Printer on fire", b"Invoice")
    deliver(desk.server, invoice, rcpt="billing@example.com")
    desk.server.process()
    [billing_ticket] = [t["id"] for t in tickets(desk.server) if t["id"] != support_ticket]
    desk.reply(support_ticket)
    desk.reply(billing_ticket)
    assert desk.send(utcnow()) == OutboxResult(taken=2, sent=2)
    [to_support] = support_relay.received
    [to_billing] = billing_relay.received
    assert to_support.mail_from == "support@example.com"
    assert to_billing.mail_from == "billing@example.com"
    assert parse(to_billing.data)["From"] == "Example Billing <billing@example.com>"
    assert parse(to_billing.data)["Subject"] == f"Re: [#{billing_ticket}] Invoice"


def test_html_reply_goes_out_sanitised_next_to_the_text(desk_for: Any, relays: Relays) -> None:
    port, handler = relays.start("ssl")
    desk: Desk = desk_for(port, encryption="ssl")
    ticket_id = desk.ticket_from_customer()
    html = desk.tmp / "body.html"
    html.write_text("<p>We are <b>on it</b><script>steal()</script></p>", encoding="utf-8")
    desk.reply(ticket_id, "We are on it.\n", "--html-file", str(html))
    assert desk.send(utcnow()).sent == 1
    msg = parse(handler.received[0].data)
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content() == "We are on it.\n"
    assert "<b>on it</b>" in html_part.get_content()
    assert "steal" not in html_part.get_content()


def outbound_count(result: str) -> float:
    value = REGISTRY.get_sample_value("firstline_outbound_messages_total", {"result": result})
    return value or 0.0


def test_451_then_250_is_retried_with_backoff_and_sent(replying: Any) -> None:
    handler = RecordingHandler(data_replies=["451 4.3.0 Mailbox busy, try again later"])
    desk, ticket_id, _ = replying(handler)
    start = utcnow()
    counted = {r: outbound_count(r) for r in ("retrying", "sent")}

    assert desk.send(start) == OutboxResult(taken=1, retrying=1)
    [shown] = desk.shown(ticket_id)["replies"]
    assert shown["state"] == "retrying"
    assert shown["error_class"] == "message rejected"
    assert "451 4.3.0 Mailbox busy, try again later" in shown["last_error"]
    assert shown["diagnosis"]["step"] == "data" and shown["diagnosis"]["temporary"] is True
    assert datetime.fromisoformat(shown["next_attempt_at"]) == start + timedelta(seconds=60)

    with Session(desk.server.engine) as session:
        assert outbox.depth(session) == {
            "queued": 0, "sending": 0, "sent": 0, "retrying": 1, "failed": 0, "held": 0
        }  # fmt: skip
    assert desk.send(start + timedelta(seconds=59)).taken == 0
    assert desk.send(start + timedelta(seconds=61)) == OutboxResult(taken=1, sent=1)
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["attempts"]) == ("sent", 2)
    assert handler.data_attempts == 2 and len(handler.received) == 1
    assert {r: outbound_count(r) - counted[r] for r in counted} == {"retrying": 1, "sent": 1}


def test_550_fails_at_once(replying: Any) -> None:
    desk, ticket_id, _ = replying(RecordingHandler(data_replies=["550 5.7.1 Relaying denied"]))
    assert desk.send(utcnow()) == OutboxResult(taken=1, failed=1)
    assert desk.send(utcnow() + timedelta(days=30)).taken == 0
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["attempts"]) == ("failed", 1)
    assert shown["diagnosis"]["server_text"] == "550 5.7.1 Relaying denied"
    assert "next_attempt_at" not in shown
    text = run("tickets", "show", str(ticket_id), config=desk.path).stdout
    assert "[failed]" in text and "550 5.7.1 Relaying denied" in text


def test_wrong_password_holds_the_reply_at_once_and_is_never_shown(
    replying: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-4711"
    desk, ticket_id, handler = replying(password=wrong)
    assert desk.send(utcnow()).held == 1
    assert desk.send(utcnow() + timedelta(days=1)).taken == 0  # not retried every minute
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["error_class"]) == ("held", "authentication")
    assert shown["diagnosis"]["server_text"] == "535 5.7.8 Authentication credentials invalid"
    human = run("tickets", "show", str(ticket_id), config=desk.path).stdout
    for text in (json.dumps(shown), human, caplog.text):
        assert wrong not in text and PASSWORD not in text
    assert handler.received == []


def test_connection_refused_retries_until_attempts_run_out(replying: Any) -> None:
    desk, ticket_id, _ = replying(port=free_port(), max_attempts=2)
    start = utcnow()
    assert desk.send(start).retrying == 1
    [shown] = desk.shown(ticket_id)["replies"]
    assert shown["error_class"] == "connection"
    assert desk.send(start + timedelta(seconds=61)).failed == 1
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["attempts"]) == ("failed", 2)


def test_two_workers_never_send_the_same_reply_twice(desk_for: Any, relays: Relays) -> None:
    port, handler = relays.start("starttls")
    desk: Desk = desk_for(port)
    ticket_id = desk.ticket_from_customer()
    ids = [desk.reply(ticket_id, f"Answer {n}\n") for n in range(6)]

    async def both() -> list[OutboxResult]:
        engine, config, now = desk.server.engine, desk.config, utcnow()
        return list(
            await asyncio.gather(
                *(send_due_replies(engine, config, owner=f"w{n}", now=now) for n in range(2))
            )
        )

    results = asyncio.run(both())
    assert sum(r.sent for r in results) == len(ids)
    sent_ids = [parse(r.data)["Message-ID"] for r in handler.received]
    assert len(sent_ids) == len(set(sent_ids)) == len(ids)


def test_a_reply_abandoned_mid_send_is_taken_again_then_given_up(replying: Any) -> None:
    desk, ticket_id, handler = replying(max_attempts=2)
    engine, start = desk.server.engine, utcnow()
    abandoned: list[int] = []

    def take(owner: str, now: datetime) -> list[outbox.ReplyClaim]:
        with Session(engine) as session, session.begin():
            return outbox.claim(
                session, owner=owner, limit=10, lease_seconds=30, max_attempts=2, now=now,
                on_abandoned=abandoned.append,
            )  # fmt: skip

    [first] = take("dies", start)
    assert take("other", start + timedelta(seconds=10)) == []  # still leased
    [again] = take("other", start + timedelta(seconds=31))
    assert again.reply_id == first.reply_id and again.token != first.token
    with pytest.raises(LeaseLost), Session(engine) as session, session.begin():
        outbox.mark_sent(session, first, server_reply="250 late", queue_id=None)
    assert abandoned == []
    assert take("third", start + timedelta(seconds=62)) == []
    assert abandoned == [first.reply_id]  # reported, so its reply.failed event is sent
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["error_class"]) == ("failed", "abandoned")
    assert handler.received == []


def test_a_bounce_marks_a_sent_reply_failed(replying: Any) -> None:
    desk, ticket_id, _ = replying()
    desk.send(utcnow())
    [shown] = desk.shown(ticket_id)["replies"]
    with Session(desk.server.engine) as session, session.begin():
        assert outbox.mark_reply_bounced(session, shown["message_id"], "5.1.1 user unknown")
        assert not outbox.mark_reply_bounced(session, "<unknown@x>", "5.1.1 user unknown")
    [shown] = desk.shown(ticket_id)["replies"]
    assert (shown["state"], shown["error_class"]) == ("failed", "bounce")
    assert shown["last_error"] == "bounced: 5.1.1 user unknown"


@pytest.mark.parametrize(
    "cc", ["boss@customer.example\r\nBcc: victim@else.example", "a@customer.example, b@x.example"]
)
def test_hostile_cc_is_refused_and_nothing_is_queued(desk_for: Any, cc: str) -> None:
    desk: Desk = desk_for(free_port())
    ticket_id = desk.ticket_from_customer()
    body = desk.tmp / "body.txt"
    body.write_text("hi\n", encoding="utf-8")
    result = run("reply", str(ticket_id), "--body-file", str(body), "--cc", cc, config=desk.path)
    assert result.exit_code == 1
    assert "firstline reply:" in result.stderr
    assert desk.shown(ticket_id)["replies"] == []
    with Session(desk.server.engine) as session:
        directions = session.scalars(select(col(KnownMessageId.direction))).all()
    assert directions == ["in"]


def test_a_body_that_is_not_utf8_is_a_usage_error(desk_for: Any) -> None:
    desk: Desk = desk_for(free_port())
    ticket_id = desk.ticket_from_customer()
    body = desk.tmp / "body.txt"
    body.write_bytes(b"Gr\xfc\xdfe\n")
    result = run("reply", str(ticket_id), "--body-file", str(body), config=desk.path)
    assert result.exit_code == 2
    assert "must be UTF-8 text" in result.output
    assert desk.shown(ticket_id)["replies"] == []


def test_reply_to_an_unknown_ticket_is_refused(desk_for: Any) -> None:
    desk: Desk = desk_for(free_port())
    body = desk.tmp / "body.txt"
    body.write_text("hi\n", encoding="utf-8")
    result = run("reply", "999", "--body-file", str(body), config=desk.path)
    assert result.exit_code == 1
    assert "there is no ticket 999" in result.stderr


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [lease.retry_delay(n, 60, 3600) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert lease.retry_delay(10_000, 60, 3600) == 3600


def test_serve_sends_queued_replies_on_its_own(replying: Any) -> None:
    desk, _, handler = replying(worker=True)
    for _ in range(200):
        if handler.received:
            break
        time.sleep(0.05)
    [received] = handler.received
    assert parse(received.data)["In-Reply-To"] == "<q1@customer.example>"
    health = desk.server.call(desk.server.app.health())
    assert health["outbox"] == "ok"


def test_a_reply_whose_lease_lapsed_before_its_turn_is_not_sent_by_the_first_worker(
    replying: Any,
) -> None:
    """While earlier replies wait on a slow relay, a later one's lease may lapse and
    another worker take it: the first worker must then leave it alone."""
    desk, ticket_id, handler = replying()
    engine, start = desk.server.engine, utcnow()

    def take(owner: str, now: datetime) -> list[outbox.ReplyClaim]:
        with Session(engine) as session, session.begin():
            return outbox.claim(
                session, owner=owner, limit=10, lease_seconds=30, max_attempts=8, now=now
            )

    [stale] = take("slow-worker", start)
    [fresh] = take("other-worker", start + timedelta(seconds=31))  # the first lease ran out
    assert fresh.reply_id == stale.reply_id
    assert asyncio.run(_send(engine, desk.config, stale, None)) is None
    assert handler.received == []
    assert asyncio.run(_send(engine, desk.config, fresh, None)) == ReplyState.SENT
    assert len(handler.received) == 1
    [shown] = desk.shown(ticket_id)["replies"]
    assert shown["state"] == "sent"
