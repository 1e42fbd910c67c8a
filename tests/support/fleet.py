"""Real ``firstline serve`` and ``firstline worker`` processes, and a client to feed them.

Crash tests and the PostgreSQL benchmark both need several processes on one
database, killed and restarted at will, and a client that remembers which
reply every message got: that is this module.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.stores import BASE_CONFIG, merge

FIRSTLINE = [str(Path(sys.executable).with_name("firstline"))]


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it, we release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(path: Path, db_url: str, **changes: Any) -> Path:
    path.write_text(
        yaml.safe_dump(merge(merge(BASE_CONFIG, {"storage": {"url": db_url}}), changes))
    )
    return path


@dataclass
class Node:
    """One firstline process; its output goes to ``log`` for the failure report."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Node:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power cut for this process."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, grace: float = 15) -> None:
        if self.process is None or not self.alive:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group we started it in
            self.process.wait(30)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"== {self.name} ==\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Listener:
    node: Node
    smtp: tuple[str, int]
    lmtp: tuple[str, int]


@dataclass
class Fleet:
    """Listeners (``serve --no-worker``) and workers on one database."""

    directory: Path
    db_url: str
    settings: dict[str, Any] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    workers: list[Node] = field(default_factory=list)

    def _config(self, name: str, **changes: Any) -> Path:
        return write_config(
            self.directory / f"{name}.yaml", self.db_url, **merge(self.settings, changes)
        )

    def add_listener(self) -> Listener:
        name = f"listener{len(self.listeners) + 1}"
        smtp, lmtp = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        config = self._config(
            name,
            server={
                "smtp": {"listen": f"{smtp[0]}:{smtp[1]}"},
                "lmtp": {"listen": f"{lmtp[0]}:{lmtp[1]}"},
            },
        )
        argv = [*FIRSTLINE, "serve", "--no-worker", "-c", str(config)]
        listener = Listener(Node(name, argv, self.directory / f"{name}.log"), smtp, lmtp)
        self.listeners.append(listener)
        return listener

    def add_worker(self) -> Node:
        name = f"worker{len(self.workers) + 1}"
        config = self._config(name, server={"smtp": None, "lmtp": None})
        node = Node(name, [*FIRSTLINE, "worker", "-c", str(config)], self.directory / f"{name}.log")
        self.workers.append(node)
        return node

    @property
    def nodes(self) -> list[Node]:
        return [listener.node for listener in self.listeners] + self.workers

    def start(self, *, workers: bool = True, timeout: float = 60) -> None:
        """Start the processes at once (they race to create the schema); wait for the ports."""
        for node in self.nodes if workers else [ln.node for ln in self.listeners]:
            node.start()
        for listener in self.listeners:
            for address in (listener.smtp, listener.lmtp):
                wait_for_port(address, listener.node, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def report(self) -> str:
        return "\n".join(node.tail() for node in self.nodes)


def wait_for_port(address: tuple[str, int], node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not node.alive:
            raise RuntimeError(f"{node.name} exited\n{node.tail()}")
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{node.name} is not listening on {address}\n{node.tail()}")


@contextmanager
def running(fleet: Fleet, *, workers: bool = True) -> Iterator[Fleet]:
    try:
        fleet.start(workers=workers)
        yield fleet
    finally:
        fleet.stop()


@dataclass(frozen=True)
class Mail:
    """One message to send and what we expect of it."""

    message_id: str
    rcpt: str
    raw: bytes
    sender: str = "customer@customer.example"


def mail(n: int, *, rcpt: str = "support@example.com", padding: int = 0) -> Mail:
    message_id = f"m{n}.{os.getpid()}@customer.example"
    raw = (
        f"From: Customer {n % 50} <c{n % 50}@customer.example>\r\nTo: {rcpt}\r\n"
        f"Subject: Question number {n}\r\nMessage-ID: <{message_id}>\r\n"
        f"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\n\r\n"
        f"Hello, this is question {n}.\r\n{'x' * padding}\r\n"
    ).encode()
    return Mail(message_id, rcpt, raw, f"c{n % 50}@customer.example")


def deliver(address: tuple[str, int], proto: str, mails: Sequence[Mail]) -> dict[str, int]:
    """Send ``mails`` on one connection; the final reply code for each Message-ID.

    A code of 0 means the connection broke before a reply: the sender does
    not know, and must retry (it is neither a promise nor a refusal).
    """
    codes: dict[str, int] = {}
    client_class = smtplib.LMTP if proto == "LMTP" else smtplib.SMTP
    try:
        with client_class(address[0], address[1], timeout=60) as client:
            for item in mails:
                codes[item.message_id] = 0
                codes[item.message_id] = _send_one(client, item)
    except (OSError, smtplib.SMTPException):
        pass  # the unanswered ones stay 0
    return codes


def _send_one(client: smtplib.SMTP, item: Mail) -> int:
    try:
        refused = client.sendmail(item.sender, [item.rcpt], item.raw)
    except smtplib.SMTPRecipientsRefused as exc:
        return int(exc.recipients[item.rcpt][0])
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return int(exc.smtp_code)
    return int(refused[item.rcpt][0]) if item.rcpt in refused else 250
