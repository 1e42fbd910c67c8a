"""Threading, duplicates, loops and bounces, through SMTP and a real batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.model import Config
from storage.engine import make_engine
from storage.models import KnownMessageId, QueueEntry, QueueState, Reply, ReplyState, TicketMessage
from storage.schema import prepare
from tests.support.corpus.cases import ALICE, BILLING, BOB, mail, multipart, part
from tests.support.mailflow import deliver, enqueue, queue_outcomes, ticket_of, tickets
from tests.support.server import ServerThread

BOB_ADDR = "bob@other.example"


def _first(server: ServerThread) -> dict[str, Any]:
    deliver(server, mail("first", "Printer broken", b"The printer jams.\r\n"))
    server.process()
    [ticket] = tickets(server)
    return ticket


def test_replies_thread_by_message_id_whatever_the_subject(server: ServerThread) -> None:
    first = _first(server)
    deliver(
        server,
        mail(
            "r1",
            "Re: Printer broken",
            b"still\r\n",
            headers=["In-Reply-To: <first@customer.example>"],
        ),
    )
    deliver(
        server,
        mail(
            "r2",
            "Something else now",
            b"new topic\r\n",
            headers=["In-Reply-To: <r1@customer.example>"],
        ),
    )
    deliver(
        server,
        mail(
            "r3",
            "AW: x",
            b"outlook\r\n",
            headers=["References: <gone@x.example> <r2@customer.example>"],
        ),
    )
    server.process()
    [ticket] = tickets(server)
    assert ticket["id"] == first["id"]
    assert [m["message_id"] for m in ticket["messages"]] == [
        "<first@customer.example>",
        "<r1@customer.example>",
        "<r2@customer.example>",
        "<r3@customer.example>",
    ]


def test_two_customers_answering_one_newsletter_get_two_tickets(server: ServerThread) -> None:
    newsletter = ["In-Reply-To: <news-1@news.example.com>", "References: <news-1@news.example.com>"]
    deliver(server, mail("a", "Re: News", b"from alice\r\n", headers=newsletter))
    deliver(
        server,
        mail("b", "Re: News", b"from bob\r\n", sender=BOB, headers=newsletter),
        mail_from=BOB_ADDR,
    )
    server.process()
    all_tickets = tickets(server)
    assert len(all_tickets) == 2
    assert {t["requester"] for t in all_tickets} == {"alice@customer.example", BOB_ADDR}


def test_subject_token_needs_a_participant(server: ServerThread) -> None:
    first = _first(server)
    token = f"[#{first['id']}]"
    deliver(server, mail("own", f"Re: {token} Printer", b"update?\r\n"))
    deliver(
        server,
        mail("stranger", f"Re: {token} Printer", b"let me in\r\n", sender=BOB),
        mail_from=BOB_ADDR,
    )
    deliver(
        server,
        mail(
            "cc-added",
            "Re: Printer",
            b"adding bob\r\n",
            headers=["In-Reply-To: <first@customer.example>", f"Cc: {BOB}"],
        ),
    )
    server.process()
    all_tickets = tickets(server)
    own = ticket_of(all_tickets, "<own@customer.example>")
    assert own["id"] == first["id"]
    assert own["messages"][1]["details"]["thread"] == {"rule": "subject-token", "evidence": token}
    assert ticket_of(all_tickets, "<stranger@customer.example>")["id"] != first["id"]
    # Once Bob is in Cc of the conversation, his token reply joins it.
    deliver(
        server, mail("bob-now", f"Re: {token}", b"now I am in\r\n", sender=BOB), mail_from=BOB_ADDR
    )
    server.process()
    assert ticket_of(tickets(server), "<bob-now@customer.example>")["id"] == first["id"]


def test_tickets_belong_to_one_mailbox(server: ServerThread) -> None:
    first = _first(server)
    reply = mail(
        "other-box",
        "Re: Printer broken",
        b"billing q\r\n",
        to=BILLING,
        headers=["In-Reply-To: <first@customer.example>"],
    )
    deliver(server, reply, rcpt=BILLING)
    deliver(server, mail("token-box", f"[#{first['id']}] x", b"t\r\n", to=BILLING), rcpt=BILLING)
    server.process()
    all_tickets = tickets(server)
    assert len(all_tickets) == 3
    assert ticket_of(all_tickets, "<other-box@customer.example>")["mailbox"] == BILLING


def test_same_mail_twice_is_one_ticket_message(server: ServerThread) -> None:
    raw = mail("twice", "Twice", b"delivered twice\r\n")
    deliver(server, raw)
    deliver(
        server, b"Received: from relay2.example by mx; Tue, 3 Nov 2026 10:01:00 +0000\r\n" + raw
    )
    no_id = mail("x", "No id", b"no message id\r\n", message_id=None)
    deliver(server, no_id)
    deliver(server, no_id)
    server.process()
    all_tickets = tickets(server)
    assert [len(t["messages"]) for t in all_tickets] == [1, 1]
    outcomes = queue_outcomes(server)
    assert [e.state.value for e, _ in outcomes] == ["done"] * 4
    assert outcomes[0][0].ticket_message_id == outcomes[1][0].ticket_message_id
    assert outcomes[2][0].ticket_message_id == outcomes[3][0].ticket_message_id


def test_same_message_id_with_other_content_is_kept(server: ServerThread) -> None:
    deliver(server, mail("reused", "One", b"first text\r\n"))
    deliver(server, mail("reused", "Two", b"another text\r\n"))
    server.process()
    texts = sorted(m["text"] for t in tickets(server) for m in t["messages"])
    assert texts == ["another text\r\n".replace("\r\n", "\n"), "first text\n"]


def _sent(server: ServerThread, ticket_id: int, message_id: str) -> None:
    """Record an outbound reply the way the outbox does."""
    with Session(server.engine) as session, session.begin():
        session.add(
            KnownMessageId(
                mailbox="support@example.com",
                message_id=message_id,
                ticket_id=ticket_id,
                direction="out",
            )
        )


def test_reply_to_our_reply_threads_and_our_own_mail_does_not(server: ServerThread) -> None:
    first = _first(server)
    ours = "<ticket-1.msg-2.abc@mx.firstline.test>"
    _sent(server, first["id"], ours)
    deliver(server, mail("answer", "Thanks", b"thanks\r\n", headers=[f"In-Reply-To: {ours}"]))
    looped = mail(
        "loop",
        "Re: Printer broken",
        b"our own text\r\n",
        sender="Support <support@example.com>",
        message_id=ours,
    )
    marked = mail("marked", "Re: x", b"ours\r\n", headers=["X-Loop: support@example.com"])
    minted = mail("minted", "Re: y", b"ours\r\n", message_id="<other.7@mx.firstline.test>")
    for raw in (looped, marked, minted):
        deliver(server, raw, mail_from="support@example.com")
    server.process()
    [ticket] = tickets(server)
    assert [m["message_id"] for m in ticket["messages"]] == [
        "<first@customer.example>",
        "<answer@customer.example>",
    ]
    assert [e.state.value for e, _ in queue_outcomes(server)] == ["done"] * 5


def _bounce(name: str, original: str) -> bytes:
    ctype, body = multipart(
        "report",
        "R",
        part("text/plain", b"Delivery failed.\r\n"),
        part(
            "message/delivery-status",
            b"Reporting-MTA: dns; mx.relay.example\r\n\r\n"
            b"Final-Recipient: rfc822; alice@customer.example\r\nAction: failed\r\n"
            b"Status: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n",
        ),
        part("text/rfc822-headers", f"Message-ID: {original}\r\n".encode()),
    )
    return mail(
        name,
        "Undelivered Mail",
        body,
        sender="MAILER-DAEMON@mx.relay.example",
        ctype=ctype.replace(";", "; report-type=delivery-status;", 1),
    )


def test_bounce_of_our_reply_joins_its_ticket_flagged(server: ServerThread) -> None:
    first = _first(server)
    ours = "<ticket-1.msg-3.def@mx.firstline.test>"
    _sent(server, first["id"], ours)
    with Session(server.engine) as session, session.begin():
        reply = Reply(
            ticket_id=first["id"],
            mailbox="support@example.com",
            message_id=ours,
            raw=b"Subject: our reply\r\n\r\nhello",
            state=ReplyState.SENT,
        )
        session.add(reply)
    deliver(server, _bounce("bounce-known", ours), mail_from="")
    deliver(server, _bounce("bounce-unknown", "<someone-else@x.example>"), mail_from="")
    server.process()
    [ticket] = tickets(server)
    bounce = ticket["messages"][1]
    assert bounce["message_id"] == "<bounce-known@customer.example>"
    assert bounce["auto_reply"] is True
    assert bounce["details"]["thread"] == {"rule": "bounce", "evidence": ours}
    assert bounce["details"]["bounce"]["status"] == "5.2.2"
    assert bounce["details"]["bounce"]["diagnostic"] == "552 5.2.2 mailbox full"
    assert bounce["details"]["bounce"]["recipients"] == ["alice@customer.example"]
    with Session(server.engine) as session:
        [delivery] = session.scalars(select(Reply)).all()
    assert delivery.state == ReplyState.FAILED
    assert delivery.last_error == "bounced: 5.2.2 552 5.2.2 mailbox full"
    assert [e.state.value for e, _ in queue_outcomes(server)] == ["done"] * 3


def test_auto_replies_are_filed_and_flagged(server: ServerThread) -> None:
    _first(server)
    deliver(
        server,
        mail(
            "ooo",
            "Out of office",
            b"away\r\n",
            headers=["Auto-Submitted: auto-replied", "In-Reply-To: <first@customer.example>"],
        ),
        mail_from="",
    )
    server.process()
    [ticket] = tickets(server)
    assert [m["auto_reply"] for m in ticket["messages"]] == [False, True]


def test_a_message_with_everything_shows_in_ticket_json(server: ServerThread) -> None:
    ctype, body = multipart(
        "mixed",
        "M",
        part("text/html; charset=iso-8859-1", "<p>Grüße <img src='cid:i@x'></p>".encode("latin-1")),
        part("image/png", b"PNGDATA", "Content-ID: <i@x>"),
        part("application/pdf", b"%PDF", "Content-Disposition: attachment; filename=a.pdf"),
    )
    deliver(
        server,
        mail(
            "full",
            "=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
            body,
            ctype=ctype,
            headers=["Cc: Carol <carol@customer.example>"],
        ),
    )
    server.process()
    [ticket] = tickets(server)
    [message] = ticket["messages"]
    assert message["subject"] == "Grüße"
    assert message["from"] == "alice@customer.example"
    assert message["from_name"] == ALICE.split(" <")[0]
    assert message["to"] == ["support@example.com"]
    assert message["cc"] == ["carol@customer.example"]
    assert message["date"] == "2026-11-03T09:00:00+00:00"
    assert message["text"] == "Grüße"
    assert message["html"] == '<p>Grüße <img src="cid:i@x"></p>'
    assert [(a["filename"], a["content_id"]) for a in message["attachments"]] == [
        ("part-1.2.png", "i@x"),
        ("a.pdf", None),
    ]
    assert [(a["filename"], a["inline"], a["size"]) for a in message["attachments"]] == [
        ("part-1.2.png", True, 7),
        ("a.pdf", False, 4),
    ]
    assert message["auto_reply"] is False
    assert message["charset_repaired"] is False


def test_a_postmaster_writing_to_us_gets_a_ticket(server: ServerThread) -> None:
    person = "Postmaster <postmaster@customer.example>"
    deliver(
        server,
        mail("pm", "Your server is on our blocklist", b"Please check.\r\n", sender=person),
        mail_from="postmaster@customer.example",
    )
    server.process()
    [ticket] = tickets(server)
    assert ticket["requester"] == "postmaster@customer.example"
    assert ticket["messages"][0]["auto_reply"] is True


def test_racing_workers_file_one_delivery_once(make_config: Callable[..., Config]) -> None:
    """Two workers holding two deliveries of one mail at the same moment."""
    config = make_config(batch={"size": 1})
    engine = make_engine(config.storage.url)
    prepare(engine)
    raw = mail("raced", "Raced", b"delivered eight times\r\n")
    try:
        with Session(engine) as session, session.begin():
            for _ in range(8):
                enqueue(session, raw)

        async def race() -> None:
            workers = [Batch(engine, file_message) for _ in range(2)]
            await asyncio.gather(*(w.drain(config) for w in workers))

        asyncio.run(race())
        with Session(engine) as session:
            messages = session.scalars(select(TicketMessage)).all()
            entries = session.scalars(select(QueueEntry)).all()
        assert len(messages) == 1
        assert {(e.state, e.ticket_message_id) for e in entries} == {
            (QueueState.DONE, messages[0].id)
        }
    finally:
        engine.dispose()


def test_racing_workers_thread_a_reply_onto_its_original(
    make_config: Callable[..., Config],
) -> None:
    """Two workers take a message and its reply at once; the reply waits for it."""
    config = make_config(batch={"size": 1, "interval": 0.05})
    engine = make_engine(config.storage.url)
    prepare(engine)
    pairs = 6
    try:
        with Session(engine) as session, session.begin():
            for n in range(pairs):
                enqueue(session, mail(f"orig-{n}", f"Question {n}", b"?\r\n"))
                reply = mail(
                    f"re-{n}",
                    "Re: it",
                    b"!\r\n",
                    headers=[f"In-Reply-To: <orig-{n}@customer.example>"],
                )
                enqueue(session, reply)

        async def race_until_filed() -> None:
            workers = [Batch(engine, file_message) for _ in range(2)]
            for _ in range(500):
                await asyncio.gather(*(w.drain(config) for w in workers))
                with Session(engine) as session:
                    states = set(session.scalars(select(QueueEntry.state)).all())
                if states == {QueueState.DONE}:
                    return
                await asyncio.sleep(0.05)  # deferred replies come due again
            raise AssertionError(f"queue never drained: {states}")

        asyncio.run(race_until_filed())
        with Session(engine) as session:
            rows = session.execute(select(TicketMessage.message_id, TicketMessage.ticket_id))
            ticket_of_id = {message_id: ticket_id for message_id, ticket_id in rows}
        assert len(set(ticket_of_id.values())) == pairs
        for n in range(pairs):
            original = ticket_of_id[f"<orig-{n}@customer.example>"]
            assert ticket_of_id[f"<re-{n}@customer.example>"] == original, n
    finally:
        engine.dispose()
