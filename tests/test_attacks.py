"""No single message can stall the service: each attack against a real server.

While an attack runs, a normal sender from another address gets its ``250``
and ``/healthz`` answers; afterwards the server is alive and the attack has a
recorded outcome (a rejection record, or a ticket with a defect). Waits are
bounded and generous: the CPU is shared; nothing here asserts a time.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy.config.model import Config, LimitsConfig
from policy.message.limits import check_header, check_structure, count_addresses
from storage.engine import make_engine
from storage.models import QueueEntry, QueueState, Rejection, TicketMessage
from storage.schema import prepare
from tests.support.mailflow import enqueue
from tests.support.server import ServerThread, running
from tests.support.stores import SQLITE_ONLY

HEAD = b"From: Mallory <mallory@attacker.example>\r\nTo: support@example.com\r\nSubject: hi\r\n"
NORMAL = (
    b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
    b"Subject: Printer on fire\r\nMessage-ID: <normal-%d@customer.example>\r\n\r\nHelp.\r\n"
)


def many_cc_fields(n: int = 1500) -> bytes:
    return HEAD + b"".join(b"Cc: u%d@x.example\r\n" % i for i in range(n)) + b"\r\nhi\r\n"


def quoted_encoded_cc(n: int = 1200) -> bytes:
    words = b",\r\n ".join(b'"=?utf-8?q?a=C3=A9b?=" <u%d@x.example>' % i for i in range(n))
    return HEAD + b"Cc: " + words + b"\r\n\r\nhi\r\n"


def many_to(n: int = 100_000) -> bytes:
    to = b"To: " + b",\r\n ".join(b"u%d@x.example" % i for i in range(n)) + b"\r\n"
    return HEAD.replace(b"To: support@example.com\r\n", to) + b"\r\nhi\r\n"


def nested_mime(depth: int = 60) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return HEAD + b"MIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nx" + tail


def many_parts(n: int = 1500) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(n))
    return (
        HEAD + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
        + parts + b"--p--\r\n"
    )  # fmt: skip


def nested_divs(n: int = 100_000) -> bytes:
    html = b"<div>\r\n" * n + b"deep text" + b"</div>\r\n" * n
    return (
        HEAD + b"Message-ID: <divs@attacker.example>\r\nContent-Type: text/html\r\n\r\n"
        + html + b"\r\n"
    )  # fmt: skip


@pytest.fixture
def attack_config(make_config: Callable[..., Config]) -> Config:
    return make_config(server={"max_message_size": 8 * 1024 * 1024}, api={"listen": "127.0.0.1:0"})


@pytest.fixture
def attacked(attack_config: Config) -> Iterator[ServerThread]:
    with running(attack_config) as server:
        yield server


def process(server: ServerThread) -> Any:
    """One batch now on the server's loop (the tests' stand-in for the worker's timer)."""
    return server.call(server.app.worker.batch.drain(server.app.holder.current), timeout=300)


def send(server: ServerThread, raw: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    host, port = server.smtp_address
    with smtplib.SMTP(host, port, timeout=120, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        assert client.mail("sender@customer.example")[0] == 250
        assert client.rcpt("support@example.com")[0] == 250
        try:
            return client.data(raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


def healthy(server: ServerThread) -> bool:
    assert server.app.api is not None
    host, port = server.app.api.address
    return httpx.get(f"http://{host}:{port}/healthz", timeout=30).json()["status"] == "ok"


def while_attacked(server: ServerThread, attack: Callable[[], Any], during: Callable[[], bool]):  # type: ignore[no-untyped-def]
    """Run ``attack`` in a thread; once it has begun, a normal client is served."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("outcome", attack()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not during() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        code, _ = send(server, NORMAL % threading.get_ident(), source="127.0.0.2")
        assert code == 250
        assert healthy(server)
    finally:
        thread.join(120)
    assert not thread.is_alive()
    return result.get("outcome")


def rejection_reasons(server: ServerThread) -> list[str]:
    server.flush()
    with Session(server.engine) as session:
        return [r.reason for r in session.scalars(select(Rejection))]


@SQLITE_ONLY  # refused at DATA from the header block: nothing stored but the refusal
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (many_cc_fields, "too_many_header_fields"),
        (quoted_encoded_cc, "too_many_addresses"),
        # 2 MB of To: is over the one reading's 256 KiB bound before any field limit
        (many_to, "header_too_large"),
        (lambda: many_to(5000), "header_field_too_large"),
        (lambda: many_to(1500), "too_many_addresses"),
        (nested_mime, "mime_too_deep"),
        (many_parts, "too_many_mime_parts"),
    ],
)
def test_costly_mail_is_refused_at_data_with_a_reason_while_others_are_served(
    attacked: ServerThread, make: Callable[[], bytes], reason: str
) -> None:
    raw = make()
    code, reply = while_attacked(attacked, lambda: send(attacked, raw), lambda: True)
    assert 550 <= code < 560, reply
    assert reason in rejection_reasons(attacked)
    assert send(attacked, NORMAL % 0)[0] == 250  # alive afterwards


@SQLITE_ONLY  # the parser's bound; the slow-parse test below covers both stores' locks
def test_deep_html_becomes_a_ticket_with_its_text_and_a_defect(attacked: ServerThread) -> None:
    code, _ = while_attacked(attacked, lambda: send(attacked, nested_divs()), lambda: True)
    assert code == 250
    while_attacked(attacked, lambda: process(attacked), lambda: True)
    message = ticket(attacked, "<divs@attacker.example>")
    assert "deep text" in message.text
    assert any("flattened" in d for d in message.details["defects"])


def ticket(server: ServerThread, message_id: str) -> TicketMessage:
    with Session(server.engine) as session:
        found = session.scalars(
            select(TicketMessage).where(TicketMessage.message_id == message_id)  # type: ignore[arg-type]
        ).one()
    return found


def test_a_message_slow_to_parse_holds_no_lock_intake_or_the_api_needs(
    make_config: Callable[..., Config],
) -> None:
    """Limits raised far past the defaults make a message that takes seconds to parse.

    While the batch parses it, intake commits (a ``250`` is a commit) and the
    API reads; on SQLite, parsing inside ``BEGIN IMMEDIATE`` blocked both.
    """
    config = make_config(
        api={"listen": "127.0.0.1:0"},
        storage={"commit_timeout": 10},
        limits={"max_addresses": 10**7},
    )
    # 10,000 addresses: as slow as a header block within the one reading's 256 KiB gets
    raw = many_to(10_000).replace(b"Subject: hi", b"Message-ID: <slow@attacker.example>")
    engine = make_engine(config.storage.url)
    prepare(engine)
    with Session(engine) as session, session.begin():
        entry = enqueue(session, raw)
    engine.dispose()
    with running(config) as server:

        def started() -> bool:
            with Session(server.engine) as session:
                row = session.get(QueueEntry, entry)
                return row is not None and row.state != QueueState.QUEUED

        while_attacked(server, lambda: process(server), started)
        assert "u9999@x.example" in ticket(server, "<slow@attacker.example>").to
        with Session(server.engine) as session:
            row = session.get(QueueEntry, entry)
            assert row is not None and (row.state, row.attempts) == (QueueState.DONE, 1)


# --- the checks themselves, on plain data ------------------------------------

LIMITS = LimitsConfig()


def test_ordinary_mail_is_within_every_limit() -> None:
    fields = [
        ("From", '"Doe, John (at) work" <john@x.example>'),
        ("To", "a@x.example, b@x.example"),
    ]
    fields += [("Received", "from a by b; Tue, 1 Dec 2026 10:00:00 +0000")] * 60
    assert check_header(fields, LIMITS) is None
    signed = (
        b'Content-Type: multipart/signed; boundary="s"\r\n\r\n--s\r\n'
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n\r\ntext\r\n'
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>-- not a boundary</p>\r\n--a--\r\n"
        b"--s\r\n\r\nsignature\r\n--s--\r\n-- \r\nRegards\r\n"
    )
    assert check_structure(b"Subject: x\r\n" + signed, LIMITS) is None


def test_addresses_are_counted_outside_quotes_and_comments() -> None:
    assert count_addresses('"a@b" <c@d.example>, (e@f) g@h.example') == 2


def test_each_limit_has_its_reason() -> None:
    assert check_structure(nested_mime(31), LIMITS).reason == "mime_too_deep"  # type: ignore[union-attr]
    assert check_structure(nested_mime(30), LIMITS) is None
    assert check_structure(many_parts(1001), LIMITS).reason == "too_many_mime_parts"  # type: ignore[union-attr]
    assert check_structure(b"X: " + b"y" * 300_000, LIMITS).reason == "header_too_large"  # type: ignore[union-attr]
    huge = [("References", "<a@b> " * 20_000)]
    assert check_header(huge, LIMITS).reason == "header_field_too_large"  # type: ignore[union-attr]
