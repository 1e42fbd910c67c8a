"""Filing a group in one transaction decides as filing its messages one by one.

The group's look-ups are asked once (``ingest/work/lookups.py``) and kept up
to date with what the group files; a message and its reply, two deliveries of
one mail, or one Message-ID in two mailboxes, filed side by side in one group,
must end exactly as they do when every message is a batch of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.model import Config
from storage.engine import make_engine
from storage.models import KnownMessageId, QueueEntry, Ticket, TicketMessage, WebhookEvent
from storage.schema import prepare
from tests.support.mailflow import enqueue


def _mail(name: str, body: str, *headers: str, sender: str = "ann@customer.example") -> bytes:
    return (
        f"From: {sender}\r\nSubject: about {name}\r\nMessage-ID: <{name}@customer.example>\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + f"\r\n{body}\r\n"
    ).encode()


# (mailbox, raw) in arrival order: every relation group filing must see inside the group.
ARRIVALS = [
    ("support@example.com", _mail("q1", "first question")),
    ("support@example.com", _mail("r1", "more", "In-Reply-To: <q1@customer.example>")),
    ("support@example.com", _mail("q1", "first question")),  # the forwarder sent it again
    ("support@example.com", _mail("q1", "other words, same Message-ID")),
    (
        "support@example.com",
        _mail("r2", "and more", "References: <q1@customer.example> <r1@customer.example>"),
    ),
    ("billing@example.com", _mail("q1", "first question")),  # another mailbox: its own ticket
    ("billing@example.com", _mail("r1", "more", "In-Reply-To: <q1@customer.example>")),
    ("support@example.com", _mail("q2", "unrelated", sender="bob@customer.example")),
]


@pytest.fixture
def other_store(db_url: str) -> Iterator[str]:
    """A second, empty store of the same kind as the test's."""
    if db_url.startswith("sqlite"):
        yield db_url.replace("firstline.db", "other.db")
        return
    schema = re.search(r"search_path%3D(\w+)", db_url)
    assert schema is not None
    other = f"{schema[1]}_other"
    admin = sqlalchemy.create_engine(db_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{other}"')
    yield db_url.replace(schema[0], f"search_path%3D{other}")
    with admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{other}" CASCADE')
    admin.dispose()


# A helpdesk's channel: every ticket message filed queues its event with a
# snapshot of its ticket, which must show the group's rows up to that message.
WEBHOOK = {"name": "helpdesk", "type": "webhook", "url": "https://desk.example/hook",
           "secret": "s3cret-for-the-group-filing-test"}  # fmt: skip


def _file_all(
    make_config: Callable[..., Config], size: int, url: str | None = None, **changes: object
) -> list[tuple[object, ...]]:
    """Every entry's outcome after batches of ``size``, and the events queued,
    with ids made comparable."""
    config = make_config(
        batch={"size": size}, **({"storage": {"url": url}} if url else {}), **changes
    )
    engine = make_engine(config.storage.url)
    prepare(engine)
    try:
        with Session(engine) as session, session.begin():
            for mailbox, raw in ARRIVALS:
                enqueue(session, raw, mailbox=mailbox)
        result = asyncio.run(Batch(engine, file_message).drain(config))
        assert result.taken == len(ARRIVALS) and result.failed == 0, result
        with Session(engine) as session:
            entries = session.scalars(select(QueueEntry).order_by(QueueEntry.id)).all()  # type: ignore[arg-type]
            messages = {m.id: m for m in session.scalars(select(TicketMessage))}
            tickets = {t.id: t for t in session.scalars(select(Ticket))}
            known = sorted(
                (k.mailbox, k.message_id, k.direction)
                for k in session.scalars(select(KnownMessageId))
            )
            events = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()  # type: ignore[arg-type]
        # Ids differ between the stores; the order they were made in does not.
        ticket_no = {t: n for n, t in enumerate(sorted(tickets))}
        message_no = {m: n for n, m in enumerate(sorted(messages))}
        outcomes: list[tuple[object, ...]] = []
        for entry in entries:
            message = messages.get(entry.ticket_message_id) if entry.ticket_message_id else None
            outcomes.append(
                (
                    entry.state,
                    entry.outcome,
                    message_no.get(entry.ticket_message_id or -1),
                    ticket_no[message.ticket_id] if message else None,
                    tickets[message.ticket_id].mailbox if message else None,
                )
            )
        for event in events:
            data = event.payload["data"]
            outcomes.append(
                (
                    event.type,
                    ticket_no[data["ticket"]["id"]],
                    message_no[data["ticket_message_id"]],
                    [message_no[m["id"]] for m in data["ticket"]["messages"]],
                )
            )
        return [*outcomes, ("known", *known)]
    finally:
        engine.dispose()


def test_one_group_files_as_one_message_at_a_time_does(
    make_config: Callable[..., Config], other_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mail.batch"):
        grouped = _file_all(make_config, size=100)
    # In one transaction: a group that fell back to one by one proves nothing.
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    alone = _file_all(make_config, size=1, url=other_store)
    assert grouped == alone
    by_entry = grouped[: len(ARRIVALS)]
    q1, r1, again, reworded, r2, billing_q1, billing_r1, q2 = by_entry
    assert r1[3] == r2[3] == q1[3]  # the thread stays one ticket …
    assert again[2] == q1[2] and again[1] is not None  # … a second delivery is no new message …
    assert "duplicate" in str(again[1])
    assert reworded[2] not in (None, q1[2])  # … other content is kept
    assert billing_q1[3] == billing_r1[3] != q1[3]  # a ticket per mailbox
    assert billing_q1[4] == "billing@example.com"
    assert q2[3] not in (q1[3], reworded[3], billing_q1[3])


def test_a_group_queues_the_events_one_message_at_a_time_does(
    make_config: Callable[..., Config], other_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each event's ticket shows the messages filed up to its own, none after."""
    channels = [WEBHOOK, {"name": "sales-desk"}]
    with caplog.at_level(logging.INFO, logger="mail.batch"):
        grouped = _file_all(make_config, size=100, channels=channels)
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    assert grouped == _file_all(make_config, size=1, url=other_store, channels=channels)
    events = [o for o in grouped if str(o[0]).startswith("ticket.")]
    assert [e[0] for e in events[:2]] == ["ticket.created", "ticket.message_added"]
    assert events[0][3] == [events[0][2]] and events[1][3] == [events[0][2], events[1][2]]
