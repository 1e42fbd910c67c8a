"""A helpdesk on loopback for the webhook tests: it checks every signature the
way docs/webhooks.md tells integrators to, answers as a test scripts it, and
records what arrived, so deliveries are observed on the wire."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.mailflow import deliver
from tests.support.server import ServerThread

SECRET = "whsec-test-0123456789"


def verify(secret: bytes, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as docs/webhooks.md shows it."""
    try:
        fields = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Delivery:
    event: dict[str, Any]
    verified: bool
    answered: int | str

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def type(self) -> str:
        return str(self.event["type"])


class Receiver:
    """A helpdesk on loopback: answers each POST as scripted, then with ``default``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.script: list[int | str] = []
        self.default: int = 200
        self.deliveries: list[Delivery] = []
        self.hanging = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signature = self.headers.get("Firstline-Signature", "")
                with receiver._lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.deliveries.append(
                        Delivery(json.loads(body), verify(receiver.secret, signature, body), answer)
                    )
                if answer == "trickle":  # each byte quick, the whole answer never in time
                    with contextlib.suppress(OSError):  # the client hung up: as it should
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                            if receiver.release.wait(0.25):
                                break
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    return
                if answer == "hang":
                    with receiver._lock:
                        receiver.hanging += 1
                    receiver.release.wait(30)
                    answer = 200
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/firstline"

    def of_type(self, type: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.type == type]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(SECRET)
    yield started
    started.close()


def poke(server: ServerThread) -> None:
    server.loop.call_soon_threadsafe(server.app.deliverer.poke)


def webhook(receiver: Receiver, **changes: Any) -> dict[str, Any]:
    channel = {
        "name": "helpdesk", "type": "webhook", "url": receiver.url, "secret": SECRET,
        "backoff": 0.05, "retry_window": 60, "timeout": 2,
    }  # fmt: skip
    channel.update(changes)
    return channel


def file_mail(server: ServerThread, *raws: bytes, rcpt: str = "support@example.com") -> None:
    for raw in raws:
        deliver(server, raw, rcpt=rcpt)
    server.process()
    poke(server)
