"""A 250 survives SIGKILL: the real `firstline serve` process, killed, then processed."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.dnsserver import DnsServer

SECRET = "s3cret-relay-password-never-logged"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def firstline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ingest.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def config_file(tmp_path: Path, db_url: str, dns_server: DnsServer) -> Iterator[tuple[Path, int]]:
    smtp = free_port()
    config = {
        "server": {
            "hostname": "mx.firstline.test",
            "smtp": {"listen": f"127.0.0.1:{smtp}"},
            "lmtp": {"listen": str(tmp_path / "lmtp.sock")},
        },
        "storage": {"url": db_url},
        # Verification asks our own empty zones, never the machine's resolver.
        "dns": {"nameservers": [dns_server.address], "timeout": 5},
        "batch": {"interval": 3600},
        "logging": {"level": "DEBUG", "format": "json"},
        "channels": [{"name": "helpdesk"}],
        "mailboxes": [
            {
                "channel": "helpdesk",
                "name": "Support",
                "address": "support@example.com",
                "smtp": {
                    "host": "smtp.example.com",
                    "port": 587,
                    "account": "support@example.com",
                    "password": "${FIRSTLINE_TEST_RELAY_PASSWORD}",
                },
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path, smtp


@pytest.fixture
def serve(config_file: tuple[Path, int]) -> Iterator[subprocess.Popen[str]]:
    """A real `firstline serve`, killed at teardown whatever the test did to it."""
    process = start_serve(*config_file)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def start_serve(path: Path, port: int) -> subprocess.Popen[str]:
    """Start serve with its log in a file (a full pipe would block the server)."""
    with (path.parent / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from ingest.cli import main; main()", "serve", "-c", str(path)],
            stderr=log,
            text=True,
            env={**os.environ, "FIRSTLINE_TEST_RELAY_PASSWORD": SECRET},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, server_log(path)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError("firstline serve did not start listening")


def server_log(path: Path) -> str:
    return (path.parent / "serve.log").read_text()


def test_accepted_mail_survives_sigkill_and_becomes_a_ticket(
    config_file: tuple[Path, int], serve: subprocess.Popen[str]
) -> None:
    path, port = config_file
    process = serve
    message = (
        b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
        b"Subject: Killed right after 250\r\nMessage-ID: <kill-1@customer.example>\r\n\r\nhello\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mail.customer.example")
        client.mail("alice@customer.example")
        client.rcpt("support@example.com")
        code, reply = client.data(message)
        process.send_signal(signal.SIGKILL)  # the very moment after the 250
    process.wait(10)
    assert code == 250, reply
    assert SECRET not in server_log(path)

    processed = firstline("process", "-c", str(path), "--json",
                          env={"FIRSTLINE_TEST_RELAY_PASSWORD": SECRET})  # fmt: skip
    assert processed.returncode == 0, processed.stderr
    assert json.loads(processed.stdout)["tickets"] == 1

    listed = firstline("tickets", "list", "-c", str(path), "--json",
                       env={"FIRSTLINE_TEST_RELAY_PASSWORD": SECRET})  # fmt: skip
    [ticket] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {
        "id",
        "mailbox",
        "subject",
        "requester",
        "status",
        "created_at",
        "message_count",
    } <= set(ticket)
    assert ticket["subject"] == "Killed right after 250"
    assert ticket["requester"] == "alice@customer.example"
    assert ticket["mailbox"] == "support@example.com"
    assert ticket["status"] == "open"

    shown = firstline("tickets", "show", str(ticket["id"]), "-c", str(path), "--json",
                      env={"FIRSTLINE_TEST_RELAY_PASSWORD": SECRET})  # fmt: skip
    detail = json.loads(shown.stdout)
    assert detail["messages"][0]["message_id"] == "<kill-1@customer.example>"
    for output in (processed, listed, shown):
        assert SECRET not in output.stdout + output.stderr


def test_lmtp_over_unix_socket_and_clean_shutdown(
    config_file: tuple[Path, int], serve: subprocess.Popen[str]
) -> None:
    path, _port = config_file
    process = serve
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path.parent / "lmtp.sock"))
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220")
    sock.sendall(b"LHLO postfix.example\r\n")
    while reader.readline()[3:4] == b"-":
        pass
    for command in (
        b"MAIL FROM:<alice@customer.example>",
        b"RCPT TO:<support@example.com>",
        b"DATA",
    ):
        sock.sendall(command + b"\r\n")
        reader.readline()
    sock.sendall(b"From: alice@customer.example\r\nSubject: via LMTP\r\n\r\nhi\r\n.\r\n")
    reply = reader.readline()
    reader.close()
    sock.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    stderr = server_log(path)
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert SECRET not in stderr
    assert '"logger": "mail.smtp"' in stderr  # JSON logs on the mail. tree
    processed = firstline("process", "-c", str(path), env={"FIRSTLINE_TEST_RELAY_PASSWORD": SECRET})
    assert "tickets 1" in processed.stdout
