"""Antivirus in the batch, end to end: mail in over SMTP, the queue and tickets out."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy.antivirus import EICAR
from policy.config.model import Config
from storage import quarantine
from storage.models import QueueEntry, Rejection, TicketMessage
from tests.support.clamd_server import MARKER, MARKER_NAME, running_clamd
from tests.support.server import ServerThread, running


def send(server: ServerThread, filename: str, data: bytes) -> None:
    message = EmailMessage()
    message["From"] = "Alice <alice@customer.example>"
    message["To"] = "support@example.com"
    message["Subject"] = "Invoice"
    message["Message-ID"] = f"<{filename}@customer.example>"
    message.set_content("Please find the invoice attached.")
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    with server.smtp() as client:
        client.sendmail("alice@customer.example", ["support@example.com"], message.as_bytes())


def entries(server: ServerThread) -> list[QueueEntry]:
    with Session(server.engine) as session:
        return list(session.scalars(select(QueueEntry).order_by(QueueEntry.id)))  # type: ignore[arg-type]


def ticket_messages(server: ServerThread) -> int:
    with Session(server.engine) as session:
        return int(session.scalar(select(func.count()).select_from(TicketMessage)) or 0)


def test_eicar_over_smtp_is_quarantined_not_a_ticket(server: ServerThread) -> None:
    send(server, "eicar.com.txt", EICAR)
    send(server, "invoice.pdf", b"%PDF-1.4 an honest invoice")
    server.process()
    infected, clean = entries(server)
    finding = "virus: EICAR-Test-File in eicar.com.txt (builtin)"
    assert infected.state == "quarantined"
    assert infected.last_error == finding
    assert infected.ticket_message_id is None
    assert clean.state == "done"
    assert ticket_messages(server) == 1
    assert infected.id is not None
    with Session(server.engine) as session:
        [rejection] = session.scalars(select(Rejection)).all()
        assert quarantine.history(session, infected.id)[0]["action"] == "quarantined"
    assert (rejection.stage, rejection.reason, rejection.reply) == (
        "BATCH",
        "virus",
        f"quarantined: {finding}",
    )
    assert rejection.message_id == "eicar.com.txt@customer.example"


def test_released_mail_becomes_a_ticket_despite_the_finding(server: ServerThread) -> None:
    send(server, "eicar.com.txt", EICAR)
    server.process()
    [entry] = entries(server)
    assert entry.id is not None
    with Session(server.engine) as session, session.begin():
        quarantine.release(session, entry.id, by="operator")
    server.process()
    [entry] = entries(server)
    assert entry.state == "done"
    assert ticket_messages(server) == 1


def test_reject_action_fails_the_entry_for_good(make_config: Callable[..., Config]) -> None:
    with running(make_config(antivirus={"action": "reject"})) as server:
        send(server, "invoice.pdf.exe", b"MZ not really")
        server.process()
        [entry] = entries(server)
        assert ticket_messages(server) == 0
    assert entry.state == "failed"
    assert entry.last_error == (
        "blocked_attachment: executable extension .exe behind .pdf in invoice.pdf.exe (builtin)"
    )


def test_clamd_down_keeps_the_message_queued_until_it_is_back(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    socket_path = tmp_path / "clamd.sock"  # where running_clamd will listen
    config = make_config(
        antivirus={"backend": "clamd", "clamd": str(socket_path), "timeout": 20},
        batch={"interval": 0.001},
    )
    with running(config) as server:
        send(server, "notes.txt", b"notes " + MARKER)
        send(server, "minutes.txt", b"nothing to see")
        server.process()
        waiting = entries(server)
        assert [e.state for e in waiting] == ["queued", "queued"]
        assert [e.attempts for e in waiting] == [0, 0]  # the message is not at fault
        assert all("unreachable" in (e.last_error or "") for e in waiting)
        assert ticket_messages(server) == 0

        with running_clamd(tmp_path, tcp=False):
            server.process()
        infected, clean = entries(server)
        assert ticket_messages(server) == 1
    assert infected.state == "quarantined"
    assert infected.last_error == f"virus: {MARKER_NAME} (clamd)"
    assert clean.state == "done"
