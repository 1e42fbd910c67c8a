"""The rejection log: one record and one Postfix-like line per refusal, and searching it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.smtp.refusals import record_batch_rejection
from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from storage.models import Rejection, StoredMessage, utcnow
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.server import RawClient, ServerThread, running
from tests.support.signing import Signer, message

MESSAGE = message(sender="Alice <alice@customer.example>", to="support@example.com")
MESSAGE_ID = MESSAGE.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()


def records(server: ServerThread) -> list[Rejection]:
    server.flush()
    with Session(server.engine) as session:
        return list(session.scalars(select(Rejection).order_by(Rejection.id)))  # type: ignore[arg-type]


def reject_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mail.reject"]


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ("nobody@example.com", "unknown_mailbox"),
        ("support+tag@example.com", "alias_not_supported"),
        ("support@elsewhere.example", "relay_denied"),
    ],
)
def test_rcpt_refusal_is_one_record_and_one_line(
    server: ServerThread, caplog: pytest.LogCaptureFixture, recipient: str, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="mail.reject")
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<x@y.example>")
    reply = client.cmd(f"RCPT TO:<{recipient}>".encode()).decode().strip()
    client.close()
    [record] = records(server)
    assert (record.stage, record.reason, record.reply) == ("RCPT", reason, reply)
    assert (record.client_ip, record.helo, record.mail_from) == (
        "127.0.0.1",
        "relay.test",
        "x@y.example",
    )
    assert record.rcpt_to == [recipient]
    [line] = reject_lines(caplog)
    assert line == (
        f"reject: RCPT from unknown[127.0.0.1]: {reply}; from=<x@y.example> to=<{recipient}> "
        f"proto=ESMTP helo=<relay.test> reason={reason}"
    )


def test_limits_and_protocol_refusals_are_one_record_each(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(
        server={"max_recipients": 2},
        mailboxes=[
            {"channel": "helpdesk", "name": "Support", "address": "support@example.com"},
            {"channel": "helpdesk", "name": "Billing", "address": "billing@example.com"},
            {"channel": "helpdesk", "name": "Lenient", "address": "lenient@example.com",
             "policy": {"dmarc": "monitor"}},
        ],
    )  # fmt: skip
    with running(config) as server:
        client = server.raw()
        client.cmd(b"EHLO relay.test")
        client.cmd(b"MAIL FROM:<a@customer.example>")
        assert client.cmd(b"RCPT TO:<support@example.com>").startswith(b"250")
        split = client.cmd(b"RCPT TO:<lenient@example.com>").decode().strip()
        assert client.cmd(b"RCPT TO:<billing@example.com>").startswith(b"250")
        too_many = client.cmd(b"RCPT TO:<lenient@example.com>").decode().strip()
        client.cmd(b"DATA")
        client.send(MESSAGE + b"y" * (1024 * 1024 + 10) + b"\r\n.\r\n")
        long_line = client.reply().decode().strip()
        client.close()
        got = [(r.stage, r.reason, r.reply) for r in records(server)]
    assert got == [
        ("RCPT", "policy_split", split),
        ("RCPT", "too_many_recipients", too_many),
        ("DATA", "message_too_big", long_line),
    ]
    assert split.startswith("452 4.5.3") and too_many.startswith("452 4.5.3")
    assert long_line.startswith("552 5.3.4")


def test_data_refusal_by_verification_keeps_headers_and_results(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    dns_server.add("customer.example", "TXT", "v=spf1 -all")
    dns_server.add("_dmarc.customer.example", "TXT", "v=DMARC1; p=reject")
    Signer("customer.example").publish(dns_server)
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 5})
    raw = message(sender="Alice <alice@customer.example>", to="support@example.com")
    with running(config, verifier_factory=configured_verifier) as server:
        with server.smtp() as client:
            client.ehlo("mx.customer.example")
            client.mail("alice@customer.example")
            client.rcpt("support@example.com")
            code, text = client.data(raw)
        [record] = records(server)
    assert code == 550
    assert (record.stage, record.reason) == ("DATA", "dmarc_reject")
    assert record.reply == f"550 {text.decode()}"
    assert record.authentication["dmarc"]["result"] == "fail"
    assert record.header_from == "Alice <alice@customer.example>"
    assert record.headers is not None and "Subject: Printer on fire" in record.headers
    assert record.message_id and "<" not in record.message_id


def test_batch_refusal_commits_with_its_transaction(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mail.reject")
    with server.smtp() as client:
        client.sendmail("alice@customer.example", ["support@example.com"], MESSAGE)
    outcome = "rejected: virus Eicar-Signature"
    with Session(server.engine) as session:
        stored = session.scalars(select(StoredMessage)).one()
        record_batch_rejection(
            session, stored, mailbox="support@example.com", reason="virus", outcome=outcome
        )
        session.rollback()  # a batch transaction that failed leaves neither row nor line
    assert records(server) == [] and reject_lines(caplog) == []
    with Session(server.engine, expire_on_commit=False) as session:
        stored = session.scalars(select(StoredMessage)).one()
        record_batch_rejection(
            session, stored, mailbox="support@example.com", reason="virus", outcome=outcome
        )
        session.commit()
    [record] = records(server)
    assert (record.stage, record.reason, record.reply) == (
        "BATCH", "virus", "rejected: virus Eicar-Signature",
    )  # fmt: skip
    assert record.trace_id == stored.trace_id
    assert record.message_id == MESSAGE_ID
    assert record.headers is not None and record.headers.startswith("Received: from ")
    [line] = reject_lines(caplog)
    assert line.startswith("reject: BATCH from unknown[127.0.0.1]: rejected: virus Eicar")
    assert line.endswith(f"msgid=<{MESSAGE_ID}> reason=virus")


def refuse_a_recipient(server: ServerThread, greeting: bytes) -> None:
    client = server.raw()
    client.cmd(greeting)
    client.cmd(b"MAIL FROM:<x@y.example>")
    client.cmd(b"RCPT TO:<nobody@example.com>")
    client.close()


def test_client_name_is_forward_confirmed_reverse_dns(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    dns_server.add("1.0.0.127.in-addr.arpa", "PTR", "mx.customer.example")
    dns_server.add("mx.customer.example", "A", "127.0.0.1")
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 5})
    with running(config) as server:
        refuse_a_recipient(server, b"EHLO relay.test")
        dns_server.records.clear()
        dns_server.add("1.0.0.127.in-addr.arpa", "PTR", "liar.example")
        dns_server.add("liar.example", "A", "192.0.2.1")
        with running(config) as second:  # a fresh resolver cache
            refuse_a_recipient(second, b"HELO relay.test")
            names = [r.client_name for r in records(second)]
    assert names == ["mx.customer.example", None]


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    return write_config(tmp_path / "firstline.yaml", db_url)


@pytest.fixture
def evidence(config: Config, config_path: Path) -> Iterator[ServerThread]:
    """Three refusals at three times, written the way the listener writes them."""
    with running(config) as server:
        now = utcnow()
        rows = [
            Rejection(created_at=now - timedelta(days=2), stage="RCPT", reason="unknown_mailbox",
                      reply="550 5.1.1 <old@example.com>: no such service mailbox here",
                      client_ip="192.0.2.1", mail_from="bob@old.example",
                      message_id="old@old.example", rcpt_to=["old@example.com"]),
            Rejection(created_at=now - timedelta(hours=3), stage="DATA", reason="dmarc_reject",
                      reply="550 5.7.1 Unauthenticated email", client_ip="192.0.2.2",
                      mail_from="bounce@mailer.example",
                      header_from="Alice <alice@customer.example>",
                      rcpt_to=["support@example.com"], mailbox="support@example.com",
                      message_id="m1@customer.example", headers="Subject: hello\r\nX-Ok: 1"),
            Rejection(created_at=now - timedelta(minutes=5), stage="RCPT", reason="relay_denied",
                      reply="550 5.1.1 relaying denied", client_ip="192.0.2.3",
                      mail_from="spam@junk.example", rcpt_to=["x%y@example.com"]),
        ]  # fmt: skip
        with Session(server.engine) as session, session.begin():
            session.add_all(rows)
        yield server


def ids(result_lines: list[dict[str, object]]) -> list[object]:
    return [row["reason"] for row in result_lines]


def test_filters_combine_and_list_newest_first(evidence: ServerThread, config_path: Path) -> None:
    assert ids(json_lines(run("rejections", "--json", config=config_path))) == [
        "relay_denied", "dmarc_reject",
    ]  # fmt: skip
    everything = json_lines(run("rejections", "--json", "--since", "7d", config=config_path))
    assert ids(everything) == ["relay_denied", "dmarc_reject", "unknown_mailbox"]
    until = everything[1]["created_at"]
    assert isinstance(until, str)
    cases: list[tuple[list[str], list[str]]] = [
        (["--until", until, "--since", "30d"], ["dmarc_reject", "unknown_mailbox"]),
        (["--message-id", "<m1@customer.example>"], ["dmarc_reject"]),
        (["--message-id", "m1@customer.example"], ["dmarc_reject"]),
        (["--message-id", "old@old.example"], ["unknown_mailbox"]),  # all that is kept
        (["--message-id", "old@old.example", "--since", "1d"], []),
        (["--sender", "ALICE@customer.example"], ["dmarc_reject"]),  # header From
        (["--sender", "bounce@mailer.example"], ["dmarc_reject"]),  # envelope
        (["--sender", "customer.example"], ["dmarc_reject"]),  # a domain
        (["--sender", "example"], []),  # not a suffix match on a bare word
        (["--mailbox", "support@example.com"], ["dmarc_reject"]),
        (["--mailbox", "x%y@example.com"], ["relay_denied"]),  # LIKE wildcards are literal
        (["--mailbox", "x_y@example.com"], []),
        (["--reason", "unknown_mailbox", "--since", "7d"], ["unknown_mailbox"]),
        (["--reason", "relay_denied", "--sender", "customer.example"], []),
    ]
    for options, expected in cases:
        found = json_lines(run("rejections", "--json", *options, config=config_path))
        assert ids(found) == expected, options


def test_human_listing_and_show_with_headers(evidence: ServerThread, config_path: Path) -> None:
    listing = run("rejections", config=config_path)
    assert listing.exit_code == 0
    assert "dmarc_reject" in listing.stdout and "-- 2 refusal(s)" in listing.stdout
    [row] = json_lines(run("rejections", "--json", "--reason", "dmarc_reject", config=config_path))
    shown = run("rejections", "-c", str(config_path), "show", str(row["id"]))
    assert shown.exit_code == 0, shown.output
    assert "reason:         dmarc_reject" in shown.stdout
    assert "headers:\nSubject: hello\nX-Ok: 1\n" in shown.stdout
    as_json = run("rejections", "-c", str(config_path), "show", str(row["id"]), "--json")
    assert json.loads(as_json.stdout)["headers"] == "Subject: hello\r\nX-Ok: 1"
    missing = run("rejections", "-c", str(config_path), "show", "999999")
    assert missing.exit_code == 1 and "no rejection record 999999" in missing.stderr


def test_bad_time_is_a_usage_error(config_path: Path) -> None:
    result = run("rejections", "--since", "yesterday-ish", config=config_path)
    assert result.exit_code == 2
    assert "neither a duration" in result.stderr


def following(
    server: ServerThread, config_path: Path, *args: str
) -> tuple[RawClient, subprocess.Popen[str]]:
    """One RCPT refusal from x@y.example, then ``firstline rejections --follow ARGS``."""
    client = server.raw()
    client.cmd(b"EHLO relay.test")
    client.cmd(b"MAIL FROM:<x@y.example>")
    client.cmd(b"RCPT TO:<before@example.com>")
    server.flush()
    firstline = str(Path(sys.executable).with_name("firstline"))
    follower = subprocess.Popen(
        [firstline, "rejections", "-c", str(config_path), "--follow", "--poll", "0.1",
         "--since", "1m", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follower.stdout is not None
    return client, follower


def test_follow_streams_new_refusals(server: ServerThread, tmp_path: Path, db_url: str) -> None:
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    client, follower = following(server, config_path, "--json", "--sender", "x@y.example")
    assert follower.stdout is not None
    try:
        lines = [json.loads(follower.stdout.readline())]  # the listing before following
        client.cmd(b"RSET")
        client.cmd(b"MAIL FROM:<other@z.example>")
        client.cmd(b"RCPT TO:<filtered@example.com>")  # another sender: filtered out
        client.cmd(b"RSET")
        client.cmd(b"MAIL FROM:<x@y.example>")
        client.cmd(b"RCPT TO:<after@example.com>")
        server.flush()
        lines.append(json.loads(follower.stdout.readline()))
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # reaps it and closes its pipes
        client.close()
    assert [line["rcpt_to"] for line in lines] == [["before@example.com"], ["after@example.com"]]


def test_follow_rows_line_up_with_the_header(
    server: ServerThread, tmp_path: Path, db_url: str
) -> None:
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    client, follower = following(server, config_path)
    assert follower.stdout is not None
    try:
        header, before = follower.stdout.readline(), follower.stdout.readline()
        client.cmd(b"RSET")
        client.cmd(b"MAIL FROM:<someone.else@z.example>")
        client.cmd(b"RCPT TO:<after@example.com>")
        server.flush()
        after = follower.stdout.readline()
    finally:
        follower.terminate()
        follower.communicate(timeout=10)
        client.close()
    for column, value in (("STAGE", "RCPT"), ("REASON", "unknown_mailbox"),
                          ("CLIENT", "unknown["), ("TO", "before@"), ("FROM", "x@y")):  # fmt: skip
        assert before.index(value) == header.index(column), (column, header, before)
    for column, value in (("STAGE", "RCPT"), ("REASON", "unknown_mailbox"),
                          ("FROM", "someone"), ("TO", "after@")):  # fmt: skip
        assert after.index(value) == header.index(column), (column, header, after)
