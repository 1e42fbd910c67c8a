"""The queue ID from "250 … queued as ID" names the message in every command, beside ids."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from ingest.smtp.stamps import new_trace_id, received_date
from ingest.smtp.verification import configured_verifier
from policy.antivirus import EICAR
from policy.config.model import Config
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.signing import message


def queued_as(server: ServerThread, raw: bytes, sender: str) -> str:
    """Send ``raw`` and return the queue ID our 250 names."""
    with server.smtp() as client:
        client.ehlo("mx.customer.example")
        client.mail(sender)
        client.rcpt("support@example.com")
        code, reply = client.data(raw)
    assert code == 250, reply
    match = re.search(rb"queued as ([0-9A-F]{12})$", reply)
    assert match is not None, reply
    return match.group(1).decode()


def infected() -> bytes:
    mail = EmailMessage()
    mail["From"] = "Alice <alice@customer.example>"
    mail["To"] = "support@example.com"
    mail["Subject"] = "Invoice"
    mail["Message-ID"] = "<invoice-1@customer.example>"
    mail["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    mail.set_content("Attached.")
    mail.add_attachment(EICAR, maintype="application", subtype="octet-stream",
                        filename="eicar.com.txt")  # fmt: skip
    return mail.as_bytes()


def test_every_command_that_names_a_message_takes_its_queue_id(
    make_config: Callable[..., Config], dns_server: DnsServer, tmp_path: Path, db_url: str
) -> None:
    dns_server.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
    config = make_config(
        dns={"nameservers": [dns_server.address], "timeout": 2}, antivirus={"action": "reject"}
    )
    path = write_config(tmp_path / "firstline.yaml", db_url)
    with running(config, verifier_factory=configured_verifier) as server:
        held = queued_as(
            server,
            message(sender="Bob <bob@held.example>", to="support@example.com", subject="held"),
            "bob@held.example",
        )
        virus = queued_as(server, infected(), "alice@customer.example")
        server.process()  # the virus: failed for good, with a BATCH refusal

        # rejections show: the batch's refusal, by our queue ID (any case).
        [refusal] = json_lines(run("rejections", "-c", str(path), "show", virus.lower(), "--json"))
        assert (refusal["trace_id"], refusal["reason"]) == (virus, "virus")
        assert run("rejections", "-c", str(path), "show", str(refusal["id"])).exit_code == 0

        # queue retry: the failed entry, by queue ID.
        [failed] = json_lines(run("queue", "list", "--json", config=path))
        assert (failed["trace_id"], failed["state"]) == (virus, "failed")
        retried = run("queue", "retry", virus, config=path)
        assert retried.exit_code == 0, retried.output
        assert retried.stdout.strip() == f"re-queued 1 message(s): {failed['id']}"

        # quarantine show / release, by queue ID; trace by it too.
        [shown] = json_lines(run("quarantine", "show", held, "--json", config=path))
        assert (shown["trace_id"], shown["reason"]) == (held, "dmarc_quarantine")
        [story] = json_lines(run("trace", held, "--json", config=path))
        assert story["trace_ids"] == [held] and story["message_id"] == shown["message_id"]
        released = run("quarantine", "release", held, "--by", "ops", config=path)
        assert released.exit_code == 0, released.output
        assert released.stdout.startswith(f"released {shown['id']} ({held})")
        gone = run("quarantine", "delete", held, config=path)
        assert gone.exit_code == 1 and f"no quarantined message with id {held}" in gone.stderr

    for command in (["quarantine", "show"], ["queue", "retry"], ["rejections", "show"]):
        wrong = run(*command, "not-an-id", config=path)
        assert wrong.exit_code == 2, command
        assert "neither a number nor a queue ID" in wrong.stderr


def test_trace_of_a_queue_id_is_headed_as_one_with_the_log_s_size(
    server: ServerThread, tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path / "firstline.yaml", db_url)
    raw = message(sender="Alice <alice@customer.example>", to="support@example.com")
    with caplog.at_level(logging.INFO, logger="mail"):
        queue_id = queued_as(server, raw, "alice@customer.example")
    [accepted] = [r.getMessage() for r in caplog.records if "accepted from" in r.getMessage()]
    size = int(re.search(r" size=(\d+) ", accepted).group(1))  # type: ignore[union-attr]
    [story] = json_lines(run("trace", queue_id.lower(), "--json", config=path))
    [received] = [e for e in story["events"] if e["event"] == "received"]
    assert received["size"] == size
    shown = run("trace", queue_id, config=path).stdout.splitlines()
    assert shown[0] == f"queue ID {queue_id}, Message-ID {story['message_id']}"
    assert f"size={size}" in next(line for line in shown if " received " in line)


def test_the_queue_ids_of_one_process_follow_one_another() -> None:
    """They count up (so the trace_id index takes each beside the last), and in
    the format operators paste: 12 hex digits, wrapping round after FFFFFFFFFFFF."""
    first, second = new_trace_id(), new_trace_id()
    assert re.fullmatch(r"[0-9A-F]{12}", first) and re.fullmatch(r"[0-9A-F]{12}", second)
    assert int(second, 16) == (int(first, 16) + 1) % 2**48


_FORKED = """
import os, sys
from ingest.smtp.stamps import new_trace_id
new_trace_id()
reading, writing = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(writing, new_trace_id().encode())
    os._exit(0)
os.close(writing)
child = os.read(reading, 64).decode()
assert os.waitpid(pid, 0)[1] == 0
print(child, *(new_trace_id() for _ in range(1000)))
"""


def test_a_forked_child_counts_from_a_start_of_its_own() -> None:
    """A child forked from a process that took ids does not take its parent's next
    ones (forked in an interpreter of its own: a test process has threads)."""
    shown = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout.split()  # fmt: skip
    child, parent = shown[0], shown[1:]
    assert re.fullmatch(r"[0-9A-F]{12}", child) and len(parent) == 1000
    assert child not in parent


def test_the_received_date_is_the_one_formatted_for_each_message() -> None:
    """Formatted once a second, it reads as formatting the message's own time did."""
    for second in (0, 1_764_629_999, 1_764_630_000, 4_102_444_800):
        for fraction in (0.0, 0.25, 0.999999):
            moment = datetime.fromtimestamp(second + fraction, UTC)
            assert received_date(int(moment.timestamp())) == format_datetime(moment)
