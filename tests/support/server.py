"""Run a real firstline App on loopback in a thread, for tests with blocking clients."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from ingest.ops.app import App, VerifierFactory
from policy.config.model import Config


class ServerThread:
    """An App with its own event loop in a daemon thread (like aiosmtpd's Controller)."""

    def __init__(self, config: Config, *, worker: bool = False,
                 verifier_factory: VerifierFactory | None = None) -> None:  # fmt: skip
        self.app = App(config, worker=worker, verifier_factory=verifier_factory)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        self.call(self.app.start())
        return self

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        # App.stop bounds each of its steps itself (and says in the log what it
        # left); this only catches a stop that ignores its own bounds.
        self.call(self.app.stop(), timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def engine(self) -> Engine:
        return self.app.engine

    @property
    def smtp_address(self) -> tuple[str, int]:
        return self.app.address("SMTP")

    @property
    def lmtp_address(self) -> tuple[str, int]:
        return self.app.address("LMTP")

    def smtp(self) -> smtplib.SMTP:
        host, port = self.smtp_address
        return smtplib.SMTP(host, port, timeout=30)

    def raw(self, proto: str = "SMTP") -> RawClient:
        host, port = self.app.address(proto)
        return RawClient(socket.create_connection((host, port), timeout=30))

    def flush(self) -> None:
        """Wait for fire-and-forget writes (rejection records) to be committed."""
        self.call(self.app.writer.flush())

    def process(self) -> Any:
        """Run one batch now, on the server's loop."""
        return self.call(self.app.worker.batch.drain(self.app.holder.current))


class RawClient:
    """A socket speaking SMTP/LMTP by hand, to see every reply a library would hide."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        """One (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                break
            lines.append(line)
            if line[3:4] != b"-":
                break
        return b"".join(lines)

    def cmd(self, command: bytes) -> bytes:
        self.send(command + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def running(config: Config, **kwargs: Any) -> Iterator[ServerThread]:
    server = ServerThread(config, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
