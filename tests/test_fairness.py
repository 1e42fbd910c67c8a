"""Fair connections and clean refusals of broken commands, against a real listener.

Strangers share the connection cap, a few per address; LMTP and our own MTAs
have a budget of their own; a session has a lifetime and a command budget;
under pressure the idle or trickling session goes first. Bytes that are not
UTF-8 in HELO, MAIL FROM or RCPT get a precise 5xx and a rejection record.
"""

from __future__ import annotations

import logging
import select as io
import socket
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy.config.model import Config
from storage.models import Rejection
from tests.support.server import RawClient, ServerThread, running
from tests.support.stores import SQLITE_ONLY

# The gate and the command parser decide before anything is stored.
pytestmark = SQLITE_ONLY

MESSAGE = (
    b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
    b"Subject: Help\r\nMessage-ID: <fair-1@customer.example>\r\n\r\nPlease help.\r\n"
)


@pytest.fixture
def gated(make_config: Callable[..., Config]) -> Iterator[ServerThread]:
    config = make_config(
        server={"max_connections": 4, "max_connections_per_ip": 2, "max_trusted_connections": 2,
                "min_session_rate": 10_000, "max_session_commands": 10},
        policy={"trusted_networks": ["127.0.0.250/32"]},
    )  # fmt: skip
    with running(config) as server:
        server.app.gate.GRACE = 0  # judged at once (5 s in service)
        yield server


@pytest.fixture
def clients() -> Iterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        client.close()


def connect(
    server: ServerThread, source: str, opened: list[RawClient], proto: str = "SMTP"
) -> RawClient:
    address = server.app.address(proto)
    opened.append(RawClient(socket.create_connection(address, 30, source_address=(source, 0))))
    return opened[-1]


def send_mail(client: RawClient) -> bytes:
    for command in (b"EHLO client.example", b"MAIL FROM:<alice@customer.example>",
                    b"RCPT TO:<support@example.com>", b"DATA"):  # fmt: skip
        client.cmd(command)
    client.send(MESSAGE + b".\r\n")
    return client.reply()


def test_idle_strangers_cannot_lock_out_a_sender_or_our_own_mta(
    gated: ServerThread, clients: list[RawClient]
) -> None:
    ips = ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3")
    idle = [connect(gated, ip, clients) for ip in ips]
    assert all(c.greeting.startswith(b"220") for c in idle)
    assert connect(gated, "127.0.0.2", clients).greeting.startswith(b"421 4.7.0")  # its share
    # Our own MTA: its own budget, over SMTP from a trusted network and over LMTP.
    assert send_mail(connect(gated, "127.0.0.250", clients)).startswith(b"250")
    lmtp = connect(gated, "127.0.0.1", clients, "LMTP")
    assert lmtp.greeting.startswith(b"220"), lmtp.greeting
    # A stranger with mail to deliver: an idle session makes room for it.
    newcomer = connect(gated, "127.0.0.9", clients)
    assert newcomer.greeting.startswith(b"220"), newcomer.greeting
    assert newcomer.greeting.startswith(b"220")
    assert send_mail(newcomer).startswith(b"250")
    # It was told before the newcomer's greeting went out.
    ready, _, _ = io.select([c.sock for c in idle], [], [], 10)
    [evicted] = [c for c in idle if c.sock in ready]
    assert evicted.line().startswith(b"421 4.4.2")


def test_a_session_has_a_command_budget(gated: ServerThread, clients: list[RawClient]) -> None:
    client = connect(gated, "127.0.0.4", clients)
    replies = [client.cmd(b"NOOP") for _ in range(11)]
    assert all(r.startswith(b"250") for r in replies[:10])
    assert replies[10].startswith(b"421 4.7.0")
    assert client.line() == b""  # and it is closed


def test_a_session_has_a_lifetime(make_config: Callable[..., Config]) -> None:
    with running(make_config(server={"max_session_seconds": 0.5})) as server:
        client = server.raw()
        try:
            client.cmd(b"EHLO client.example")
            assert client.line().startswith(b"421 4.4.2")  # unasked, once its time is up
            assert client.line() == b""
        finally:
            client.close()


@pytest.mark.parametrize(
    ("commands", "reply", "reason"),
    [
        ([b"EHLO h\xffst.example"], b"501 5.5.2", "invalid_helo"),
        ([b"HELO h\xffst.example"], b"501 5.5.2", "invalid_helo"),
        ([b"EHLO ok.example", b"MAIL FROM:<\xff@customer.example>"], b"553 5.1.7",
         "invalid_sender"),
        ([b"EHLO ok.example", b"MAIL FROM:<a@customer.example>", b"RCPT TO:<\xff@example.com>"],
         b"553 5.1.3", "invalid_recipient"),
    ],
)  # fmt: skip
def test_bytes_that_are_not_utf8_in_commands_get_a_precise_refusal(
    server: ServerThread, caplog: pytest.LogCaptureFixture,
    commands: list[bytes], reply: bytes, reason: str,
) -> None:  # fmt: skip
    client = server.raw()
    with caplog.at_level(logging.INFO):
        replies = [client.cmd(c) for c in commands]
        assert replies[-1].startswith(reply)
        assert send_mail(client).startswith(b"250")  # the session goes on, cleanly
    client.close()
    server.flush()
    with Session(server.engine) as session:
        assert [r.reason for r in session.scalars(select(Rejection))] == [reason]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if getattr(r, "reason", None) == reason]) == 1
