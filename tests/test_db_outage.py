"""The database goes away mid-session: ``451``, never ``250``, and recovery without a restart.

PostgreSQL sits behind a TCP proxy this test runs, so the database can be cut
off (every connection reset, new ones refused) and given back on the same
address while an SMTP/LMTP session stays open on the listener.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.config.loading import parse_config
from storage.engine import make_engine
from storage.models import StoredMessage, TicketMessage
from tests.support.fleet import mail
from tests.support.server import ServerThread, running
from tests.support.stores import BASE_CONFIG, merge

pytestmark = pytest.mark.postgres


class TcpProxy:
    """Forwards a loopback port to the database; ``cut`` makes the database vanish."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: socket.socket | None = None
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by cut()
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._links += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _reset(sock)

    def upstream_ports(self) -> list[int]:
        """Our local ports towards the database: pg_stat_activity's client_port of our backends."""
        with self._lock:
            links = list(self._links)
        ports = []
        for sock in links[1::2]:
            with contextlib.suppress(OSError):
                ports.append(sock.getsockname()[1])
        return ports

    def cut(self) -> None:
        """The database host vanishes: connections reset, new ones refused."""
        if self._server is not None:
            _reset(self._server)  # shutdown also wakes the thread blocked in accept
            self._server = None
        with self._lock:
            links, self._links = self._links, []
        for sock in links:
            _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Hang up now: shutdown wakes the pump blocked in recv, linger 0 makes close an RST."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def proxy(postgres_schema_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(postgres_schema_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
    yield proxy
    proxy.cut()


@pytest.fixture
def server(postgres_schema_url: str, proxy: TcpProxy) -> Iterator[ServerThread]:
    parts = urlsplit(postgres_schema_url)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    via_proxy = urlunsplit(parts._replace(netloc=netloc))
    settings = {"storage": {"url": via_proxy}, "batch": {"interval": 0.2}}
    config = parse_config(yaml.safe_dump(merge(BASE_CONFIG, settings)), "outage.yaml")
    with running(config, worker=True) as started:
        yield started


def send(client: smtplib.SMTP, n: int) -> int:
    item = mail(n)
    try:
        client.sendmail(item.sender, [item.rcpt], item.raw)
    except smtplib.SMTPDataError as exc:
        return int(exc.smtp_code)
    return 250


def message_ids(url: str, column: Any) -> set[str]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return {i.strip("<>") for i in session.scalars(select(column)) if i}
    finally:
        engine.dispose()


def eventually(condition: Callable[[], bool], timeout: float = 30) -> bool:
    """The worker runs every 0.2 s: wait a bounded while for what it should do."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("proto", ["SMTP", "LMTP"])
def test_database_cut_off_mid_session_answers_451_and_recovers_by_itself(
    server: ServerThread,
    proxy: TcpProxy,
    postgres_schema_url: str,
    proto: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, port = server.app.address(proto)
    client_class = smtplib.LMTP if proto == "LMTP" else smtplib.SMTP
    with client_class(host, port, timeout=60) as client:
        assert send(client, 1) == 250
        proxy.cut()
        outage = [send(client, n) for n in range(2, 7)]
        # The worker's next batch meets the outage too.
        assert eventually(lambda: any(r.message.startswith("batch failed") for r in caplog.records))
        proxy.start()  # the database is back, on the same address
        after = [send(client, n) for n in range(7, 10)]
    assert outage == [451] * 5
    assert after == [250] * 3  # the same session, no restart, first try
    expected = {mail(n).message_id for n in (1, 7, 8, 9)}
    # Nothing from the outage; and the worker, which failed batches meanwhile, is back too.
    assert message_ids(postgres_schema_url, col(StoredMessage.header_message_id)) == expected
    assert eventually(
        lambda: message_ids(postgres_schema_url, col(TicketMessage.message_id)) == expected
    )


def test_backends_terminated_by_the_server_are_replaced_without_losing_mail(
    server: ServerThread, proxy: TcpProxy, postgres_schema_url: str
) -> None:
    """A PostgreSQL restart or failover kills our sessions: the pool reconnects on its own."""
    admin = make_engine(postgres_schema_url)
    try:
        with server.smtp() as client:
            assert send(client, 1) == 250
            with admin.begin() as connection:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE client_port = ANY(:ports)"
                    ),
                    {"ports": proxy.upstream_ports()},
                ).scalar()
            after = [send(client, n) for n in range(2, 5)]
    finally:
        admin.dispose()
    assert killed
    assert after == [250] * 3
    expected = {mail(n).message_id for n in range(1, 5)}
    assert message_ids(postgres_schema_url, col(StoredMessage.header_message_id)) == expected


def test_postgres_connections_give_up_on_a_host_that_never_answers(
    postgres_schema_url: str,
) -> None:
    """No reset, no refusal, no reply: connecting fails after connect_timeout, not never."""
    engine = make_engine(postgres_schema_url)
    with engine.connect() as connection:
        params = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    engine.dispose()
    assert params["tcp_user_timeout"] == "20000"
    assert params["keepalives"] == "1"

    with socket.socket() as mute:  # accepts TCP connections and never says a word
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        parts = urlsplit(postgres_schema_url)
        silent = urlunsplit(
            parts._replace(
                netloc=f"{parts.username}@127.0.0.1:{mute.getsockname()[1]}",
                query=f"{parts.query}&connect_timeout=1",  # the URL overrides the default
            )
        )
        engine = make_engine(silent)
        with pytest.raises(OperationalError, match="timeout"), engine.connect():
            pass
        engine.dispose()
