"""The front door over real SMTP/LMTP connections, including hostile clients."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy.config.model import Config
from storage.engine import BENCH_COMMIT_DELAY_ENV
from storage.models import QueueEntry, Rejection, StoredMessage, TicketMessage
from tests.support.server import ServerThread, running
from tests.support.stores import SQLITE_ONLY

MESSAGE = (
    b"From: Alice <alice@customer.example>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Printer on fire\r\n"
    b"Message-ID: <fire-1@customer.example>\r\n"
    b"\r\n"
    b"Please help.\r\n"
)


def stored(server: ServerThread) -> list[StoredMessage]:
    with Session(server.engine) as session:
        return list(session.scalars(select(StoredMessage).order_by(StoredMessage.id)))  # type: ignore[arg-type]


def rejections(server: ServerThread) -> list[Rejection]:
    server.flush()
    with Session(server.engine) as session:
        return list(session.scalars(select(Rejection).order_by(Rejection.id)))  # type: ignore[arg-type]


def count(server: ServerThread, model: type) -> int:
    with Session(server.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_accepts_known_mailbox_and_stores_exact_bytes(server: ServerThread) -> None:
    with server.smtp() as client:
        client.ehlo("mail.customer.example")
        code, reply = client.docmd("MAIL FROM:<alice@customer.example>")
        assert code == 250
        assert client.rcpt("Support@EXAMPLE.com")[0] == 250
        code, reply = client.data(MESSAGE)
    assert code == 250
    assert reply.startswith(b"2.0.0 Ok: queued as ")
    [message] = stored(server)
    assert message.raw is not None
    assert message.raw.endswith(MESSAGE)  # exact bytes, after our own headers
    assert message.raw.startswith(b"Received: from mail.customer.example")
    assert f"id {message.trace_id}".encode() in message.raw
    assert reply.decode().endswith(message.trace_id)
    assert message.rcpt_tos == ["support@example.com"]
    assert message.mail_from == "alice@customer.example"
    assert message.header_message_id == "fire-1@customer.example"
    with Session(server.engine) as session:
        [entry] = session.scalars(select(QueueEntry)).all()
    assert entry.mailbox == "support@example.com"
    assert entry.state == "queued"
    assert len(entry.digest) == 64


@SQLITE_ONLY
def test_ehlo_advertises_size_pipelining_and_enhanced_codes(server: ServerThread) -> None:
    with server.smtp() as client:
        client.ehlo("x")
        assert client.has_extn("pipelining")
        assert client.has_extn("enhancedstatuscodes")
        assert client.esmtp_features["size"] == str(1024 * 1024)


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("recipient", "reason", "text"),
    [
        ("nobody@example.com", "unknown_mailbox", b"no such service mailbox"),
        ("support+tag@example.com", "alias_not_supported", b"aliases and sub-addresses"),
        ("support@elsewhere.example", "relay_denied", b"relaying denied"),
        ("support%elsewhere.example@example.com", "relay_denied", b"relaying denied"),
        ("elsewhere.example!support@example.com", "relay_denied", b"relaying denied"),
        ('"support@example.com"@example.com', "relay_denied", b"relaying denied"),
        ("@elsewhere.example:support@example.com", "relay_denied", b"source routes"),
        ("@a.example,@b.example:support@example.com", "relay_denied", b"source routes"),
    ],
)
def test_refuses_recipients_that_are_not_exactly_a_service_address(
    server: ServerThread, recipient: str, reason: str, text: bytes
) -> None:
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<x@y.example>")
    reply = client.cmd(f"RCPT TO:<{recipient}>".encode())
    client.close()
    assert reply.startswith(b"550 5.1.1 ")
    assert text in reply
    [record] = rejections(server)
    assert record.stage == "RCPT"
    assert record.reason == reason
    assert record.reply == reply.decode().strip()
    assert record.helo == "relay.test"
    assert record.mail_from == "x@y.example"


@SQLITE_ONLY
def test_thousands_of_pipelined_recipients(server: ServerThread) -> None:
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<x@y.example>")
    client.send(b"RCPT TO:<support@example.com>\r\n")
    assert client.reply().startswith(b"250")
    client.send(b"".join(f"RCPT TO:<rcpt{i}@example.com>\r\n".encode() for i in range(1000)))
    replies = []
    while reply := client.reply():
        replies.append(reply)
    client.close()
    # Refused recipients are answered one by one up to the session's RCPT budget
    # (1000 commands), then the session is closed with 421 rather than left to burn CPU.
    assert len(replies) == 1000
    assert all(r.startswith(b"550 5.1.1") for r in replies[:-1])
    assert replies[-1].startswith(b"421 4.7.0")
    with server.smtp() as fresh:
        assert fresh.sendmail("a@customer.example", ["support@example.com"], MESSAGE) == {}


@SQLITE_ONLY
def test_too_many_recipients_gets_452_4_5_3(make_config: Callable[..., Config]) -> None:
    config = make_config(server={"max_recipients": 1})
    with running(config) as server:
        client = server.raw()
        client.cmd(b"EHLO relay.test")
        client.cmd(b"MAIL FROM:<x@y.example>")
        assert client.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
        reply = client.cmd(b"RCPT TO:<billing@example.com>")
        client.close()
        assert reply.startswith(b"452 4.5.3 ")
        [record] = rejections(server)
        assert record.reason == "too_many_recipients"


@SQLITE_ONLY
def test_oversized_message_gets_552_5_3_4(server: ServerThread) -> None:
    big = MESSAGE + (b"x" * 998 + b"\r\n") * 1100
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    declared = client.cmd(b"MAIL FROM:<a@customer.example> SIZE=999999999")
    client.cmd(b"MAIL FROM:<a@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"DATA")
    client.send(big + b".\r\n")
    sent = client.reply()
    client.close()
    assert declared.startswith(b"552 5.3.4 ")
    assert sent.startswith(b"552 5.3.4 ")
    assert stored(server) == []
    records = rejections(server)
    assert [(r.stage, r.reason) for r in records] == [
        ("MAIL", "message_too_big"),
        ("DATA", "message_too_big"),
    ]
    assert records[1].rcpt_to == ["support@example.com"]


def test_lmtp_answers_once_per_recipient(server: ServerThread) -> None:
    client = server.raw("LMTP")
    assert b"LMTP" in client.greeting or client.greeting.startswith(b"220")
    lhlo = client.cmd(b"LHLO relay.test")
    assert b"250-PIPELINING" in lhlo and b"250-ENHANCEDSTATUSCODES" in lhlo
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    assert client.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<nobody@example.com>").startswith(b"550")
    assert client.cmd(b"RCPT TO:<billing@example.com>").startswith(b"250")
    assert client.cmd(b"DATA").startswith(b"354")
    client.send(MESSAGE + b".\r\n")
    first, second = client.line(), client.line()
    client.cmd(b"QUIT")
    client.close()
    assert first.startswith(b"250 2.0.0 Ok: queued as ")
    assert second == first
    [message] = stored(server)
    assert sorted(message.rcpt_tos) == ["billing@example.com", "support@example.com"]
    assert count(server, QueueEntry) == 2


@SQLITE_ONLY
def test_lmtp_refuses_helo_and_ehlo(server: ServerThread) -> None:
    client = server.raw("LMTP")
    assert client.cmd(b"EHLO x").startswith(b"500")
    assert client.cmd(b"HELO x").startswith(b"500")
    client.close()


@SQLITE_ONLY
@pytest.mark.parametrize(
    "smuggled_end",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CR.CRLF", "CRLF.LF", "CRLF.CR"],
)
def test_smtp_smuggling_is_not_a_second_message(server: ServerThread, smuggled_end: bytes) -> None:
    smuggled = (
        b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
        b"From: ceo@bank.example\r\nSubject: smuggled\r\n\r\nwire money\r\n"
    )
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    assert client.cmd(b"DATA").startswith(b"354")
    client.send(MESSAGE + b"text" + smuggled_end + smuggled + b".\r\n")
    reply = client.reply()
    client.cmd(b"QUIT")
    client.close()
    assert reply.startswith(b"250")
    [message] = stored(server)
    assert message.raw is not None
    # Kept inside the one message (a leading dot on a CRLF-started line is unstuffed).
    assert smuggled_end.replace(b"\r\n.", b"\r\n") + smuggled in message.raw
    assert count(server, QueueEntry) == 1


def test_nul_bytes_and_long_lines(server: ServerThread) -> None:
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"DATA")
    client.send(MESSAGE + b"nul\x00here\r\n.\r\n")
    assert client.reply().startswith(b"250")
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"DATA")
    # Real mailers send HTML and unwrapped base64 as single lines of tens of
    # kilobytes: accepted as long as the message fits the size limit.
    client.send(MESSAGE + b"y" * 200_000 + b"\r\n.\r\n")
    long_line = client.reply()
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"DATA")
    client.send(MESSAGE + b"y" * (1024 * 1024 + 10) + b"\r\n.\r\n")
    over_size = client.reply()
    huge_command = client.cmd(b"NOOP " + b"z" * 10000)
    client.close()
    assert long_line.startswith(b"250 ")
    assert over_size.startswith(b"552 5.3.4 ")
    assert huge_command.startswith(b"500")
    first, second = stored(server)
    assert first.raw is not None and b"nul\x00here" in first.raw
    assert second.raw is not None and b"y" * 200_000 + b"\r\n" in second.raw


def test_null_sender_is_accepted_for_bounces(server: ServerThread) -> None:
    client = server.raw()
    client.cmd(b"EHLO mailer.example")
    assert client.cmd(b"MAIL FROM:<>").startswith(b"250")
    assert client.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
    client.cmd(b"DATA")
    client.send(MESSAGE + b".\r\n")
    assert client.reply().startswith(b"250")
    client.close()
    [message] = stored(server)
    assert message.mail_from == ""


@SQLITE_ONLY
def test_crlf_cannot_reach_the_received_header(server: ServerThread) -> None:
    client = server.raw()
    client.cmd(b"EHLO evil\rInjected: yes")
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"DATA")
    client.send(MESSAGE + b".\r\n")
    assert client.reply().startswith(b"250")
    client.close()
    [message] = stored(server)
    assert message.raw is not None
    header = message.raw.split(b"\r\n\t", 1)[0]
    assert b"\rInjected" not in header and b"\nInjected" not in header


@SQLITE_ONLY
def test_connection_limit_per_ip_answers_421(make_config: Callable[..., Config]) -> None:
    config = make_config(server={"max_connections_per_ip": 2})
    with running(config) as server:
        first, second = server.raw(), server.raw()
        third = server.raw()
        assert first.greeting.startswith(b"220") and second.greeting.startswith(b"220")
        assert third.greeting.startswith(b"421 4.7.0")
        for client in (first, second, third):
            client.close()


def test_storage_failure_answers_451_without_detail(server: ServerThread) -> None:
    """A real database error (a trigger refusing inserts) must never become a 250."""
    dialect = server.engine.dialect.name
    with server.engine.begin() as connection:
        if dialect == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON queue "
                "BEGIN SELECT RAISE(ABORT, 'secret internal detail: disk full'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'secret internal detail: disk full'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON queue "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    client = server.raw("LMTP")
    client.cmd(b"LHLO relay.test")
    client.cmd(b"MAIL FROM:<alice@customer.example>")
    client.cmd(b"RCPT TO:<support@example.com>")
    client.cmd(b"RCPT TO:<billing@example.com>")
    client.cmd(b"DATA")
    client.send(MESSAGE + b".\r\n")
    replies = [client.line(), client.line()]
    client.close()
    assert replies == [b"451 4.3.0 Internal error; please try again later\r\n"] * 2
    assert stored(server) == []  # nothing half-written: the message row rolled back too
    assert count(server, QueueEntry) == 0


@SQLITE_ONLY
def test_starttls_discards_pipelined_plaintext_commands(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.firstline.test")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    config = make_config(
        server={
            "tls": {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}
        }
    )
    with running(config) as server:
        client = server.raw()
        assert b"STARTTLS" in client.cmd(b"EHLO relay.test")
        # An attacker injects a command after STARTTLS in the same packet (CVE-2024-34083).
        client.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        assert client.line().startswith(b"220")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        tls = context.wrap_socket(client.sock, server_hostname="mx.firstline.test")
        tls.sendall(b"EHLO relay.test\r\n")
        reader = tls.makefile("rb")
        ehlo = [reader.readline()]
        while ehlo[-1][3:4] == b"-":
            ehlo.append(reader.readline())
        tls.sendall(b"RCPT TO:<support@example.com>\r\n")
        reply = reader.readline()
        reader.close()
        tls.close()
    assert reply.startswith(b"503")  # the injected MAIL FROM was never executed
    assert not [line for line in ehlo if b"AUTH" in line]  # never offered: it always fails


def test_a_stalled_commit_answers_451_and_the_retry_is_filed_once(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that stops answering: 451 after storage.commit_timeout, never a hang."""
    monkeypatch.setenv(BENCH_COMMIT_DELAY_ENV, "1500")  # every commit takes 1.5 s
    config = make_config(storage={"commit_timeout": 0.3})
    with running(config) as server:
        client = server.raw()
        client.cmd(b"EHLO relay.test")
        client.cmd(b"MAIL FROM:<alice@customer.example>")
        client.cmd(b"RCPT TO:<support@example.com>")
        client.cmd(b"DATA")
        client.send(MESSAGE + b".\r\n")
        stalled = client.reply()
        client.close()
        server.flush()  # the slow commit lands after all
        monkeypatch.delenv(BENCH_COMMIT_DELAY_ENV)
    assert stalled == b"451 4.3.0 Internal error; please try again later\r\n"
    # The forwarder retries the same bytes; the batch files them once.
    with running(config) as server:
        with server.smtp() as retry:
            assert retry.sendmail("alice@customer.example", ["support@example.com"], MESSAGE) == {}
        result = server.process()
        assert len(stored(server)) == 2
        with Session(server.engine) as session:
            assert len(session.scalars(select(TicketMessage)).all()) == 1
    assert result.taken == 2
