"""What the console's tests share: a running firstline with the console on, and hostile mail.

The server is the real App (listeners, verifier, HTTP API with the console
mounted) on loopback; sender verification uses the tests' DNS server, where
``refused.example`` publishes DMARC ``p=reject`` and ``held.example``
``p=quarantine``, so mail "from" them without a signature is refused or held.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any

import argon2
import httpx
import yaml

from ingest.smtp.verification import configured_verifier
from policy.config.loading import parse_config
from policy.config.model import Config
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.stores import BASE_CONFIG, merge

OPERATOR, OPERATOR_PASSWORD = "ann", "operator pass phrase 1"
VIEWER, VIEWER_PASSWORD = "vic", "viewer pass phrase 2"
# A subject built to escape every way it can: markup, attribute breaking, bidi, length.
HOSTILE_SUBJECT = (
    '<script>alert(1)</script>"onmouseover="alert(2)" <img src=x onerror=alert(3)> '
    "\u202eevil.exe\u202c " + "lorem ipsum " * 860  # 10 KB, folded into header lines
)
_HASHES: dict[str, str] = {}


# Real argon2id hashes, with cheap parameters: every login verifies one, and the
# production cost (64 MiB, 3 passes) is there to be slow.
_CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def password_hash(password: str) -> str:
    if password not in _HASHES:
        _HASHES[password] = _CHEAP.hash(password)
    return _HASHES[password]


def console_config(db_url: str, dns: DnsServer | None = None, **changes: Any) -> Config:
    data = merge(
        BASE_CONFIG,
        {
            "storage": {"url": db_url},
            "api": {"listen": "127.0.0.1:0"},
            "console": {
                "users": [
                    {"name": OPERATOR, "password": password_hash(OPERATOR_PASSWORD)},
                    {"name": VIEWER, "password": password_hash(VIEWER_PASSWORD),
                     "role": "read-only"},
                ],
                "login_attempts": 3,
            },
        },
    )  # fmt: skip
    if dns is not None:
        dns.add("_dmarc.refused.example", "TXT", "v=DMARC1; p=reject")
        dns.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
        data["dns"] = {"nameservers": [dns.address], "timeout": 0.5}
    return parse_config(yaml.safe_dump(merge(data, changes)), "console-test.yaml")


@contextmanager
def console_server(config: Config) -> Iterator[ServerThread]:
    with running(config, verifier_factory=configured_verifier) as server:
        yield server


def base_url(server: ServerThread) -> str:
    assert server.app.api is not None
    host, port = server.app.api.address
    return f"http://{host}:{port}"


def mail(
    sender: str, subject: str, *, message_id: str | None = None, date: datetime | None = None
) -> tuple[bytes, str]:
    """An unsigned message (so DMARC fails for the p=reject/p=quarantine domains)."""
    domain = sender.rpartition("@")[2].rstrip(">")
    mid = message_id or make_msgid(domain=domain)
    head = [
        ("From", sender),
        ("To", "support@example.com"),
        ("Subject", subject),
        ("Date", format_datetime(date or datetime.now(UTC))),
        ("Message-ID", mid),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ]
    text = "".join(f"{name}: {_folded(value)}\r\n" for name, value in head)
    body = "Hello,\r\n\r\n<b>not bold</b> the printer is on fire.\r\n"
    return (text + "\r\n" + body).encode("utf-8"), mid.strip("<>")


def _folded(value: str, width: int = 900) -> str:
    """Long values folded at spaces, as a mail program would (SMTP lines are limited)."""
    lines = [""]
    for word in value.split(" "):
        if len(lines[-1]) + len(word) >= width:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + word
    return "\r\n ".join(lines)


def send(server: ServerThread, raw: bytes, mail_from: str) -> int:
    with server.smtp() as client:
        client.ehlo("mx.sender.test")
        client.mail(mail_from)
        client.rcpt("support@example.com")
        code, _ = client.data(raw)
    server.flush()
    return code


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    page = client.get("/console/login")
    found = re.search(r'name="token" value="([^"]+)"', page.text)
    assert found is not None
    return client.post(
        "/console/login",
        data={"user": user, "password": password, "token": found.group(1), "next": "/console/"},
    )
