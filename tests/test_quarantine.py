"""Quarantine: list, show, release into the batch (→ ticket), delete; every action audited."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from storage import quarantine
from storage.models import QuarantineAction, QueueEntry, StoredMessage, TicketMessage
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.signing import message


@pytest.fixture
def holding(make_config: Callable[..., Config], dns_server: DnsServer) -> Iterator[ServerThread]:
    """A server that quarantines mail from held.example (its DMARC policy says so)."""
    dns_server.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 5})
    with running(config, verifier_factory=configured_verifier) as server:
        yield server


def hold(server: ServerThread, subject: str) -> None:
    raw = message(sender="Alice <alice@held.example>", to="support@example.com", subject=subject)
    with server.smtp() as client:
        client.sendmail("alice@held.example", ["support@example.com"], raw)


def test_release_files_a_ticket_and_delete_forgets_the_mail(
    holding: ServerThread, tmp_path: Path, db_url: str
) -> None:
    hold(holding, "first")
    hold(holding, "second")
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    listed = json_lines(run("quarantine", "list", "--json", config=config_path))
    assert [(r["subject"], r["reason"]) for r in listed] == [
        ("second", "dmarc_quarantine"), ("first", "dmarc_quarantine"),
    ]  # fmt: skip
    second, first = listed[0]["id"], listed[1]["id"]
    holding.process()  # quarantined mail is not the batch's business
    assert json_lines(run("quarantine", "list", "--json", config=config_path)) == listed

    shown = run("quarantine", "show", str(first), config=config_path)
    assert shown.exit_code == 0
    assert "Subject: first" in shown.stdout and "dmarc=fail" in shown.stdout

    released = run("quarantine", "release", str(first), "--by", "alice", config=config_path)
    assert released.exit_code == 0, released.output
    assert "by alice" in released.stdout
    holding.process()
    with Session(holding.engine) as session:
        entry = session.get(QueueEntry, first)
        assert entry is not None and entry.state == "done"
        assert entry.released_at is not None and entry.released_reason == "dmarc_quarantine"
        assert entry.ticket_message_id is not None
        ticket_message = session.get(TicketMessage, entry.ticket_message_id)
        assert ticket_message is not None and ticket_message.subject == "first"
        assert quarantine.released_reason(session, first) == "dmarc_quarantine"
        assert quarantine.released_reason(session, second) is None

    deleted = run("quarantine", "delete", str(second), "--by", "bob", "--note", "spam",
                  config=config_path)  # fmt: skip
    assert deleted.exit_code == 0
    with Session(holding.engine) as session:
        assert session.get(QueueEntry, second) is None
        subjects = session.scalars(select(StoredMessage.subject)).all()  # type: ignore[arg-type]
        assert subjects == ["first"]
        audit = session.scalars(select(QuarantineAction).order_by(QuarantineAction.id)).all()  # type: ignore[arg-type]
    assert [(a.action, a.by, a.queue_entry_id, a.reason, a.note) for a in audit] == [
        ("released", "alice", first, "dmarc_quarantine", None),
        ("deleted", "bob", second, "dmarc_quarantine", "spam"),
    ]
    assert all(a.at is not None and a.message_id for a in audit)
    assert json_lines(run("quarantine", "list", "--json", config=config_path)) == []
    again = run("quarantine", "release", str(first), config=config_path)
    assert again.exit_code == 1
    assert f"no quarantined message with id {first}" in again.stderr

    trace = json.loads(run("trace", "--json", str(audit[0].message_id), config=config_path).stdout)
    events = [e["event"] for e in trace["events"]]
    assert events[0] == "received" and "quarantine released" in events
    assert trace["status"][0]["status"].startswith("on ticket ")


def test_the_batch_can_audit_its_own_quarantining(holding: ServerThread) -> None:
    hold(holding, "held by the batch")
    with Session(holding.engine) as session, session.begin():
        entry_id = session.scalars(select(QueueEntry.id)).one()  # type: ignore[arg-type]
        quarantine.record_quarantined(session, entry_id, by="antivirus")
    with Session(holding.engine) as session:
        [item] = quarantine.history(session, entry_id)
    assert (item["action"], item["by"], item["reason"]) == (
        "quarantined", "antivirus", "dmarc_quarantine",
    )  # fmt: skip
