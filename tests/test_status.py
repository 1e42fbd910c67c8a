"""``firstline status``: queue, oldest waiting, last batches and refusals, from the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy

from tests.support.cli import run, write_config
from tests.support.server import ServerThread
from tests.support.signing import message


def test_status_shows_queue_batches_and_refusals(
    server: ServerThread, tmp_path: Path, db_url: str
) -> None:
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    empty = json.loads(run("status", "--json", config=config_path).stdout)
    assert empty["queue"] == {"queued": 0, "leased": 0, "done": 0, "failed": 0, "quarantined": 0}
    assert (empty["oldest_waiting"], empty["batches"], empty["rejections_24h"]) == (None, [], {})
    assert empty["outbox"] == dict.fromkeys(
        ("queued", "sending", "sent", "retrying", "failed", "held"), 0
    )

    for subject in ("one", "two"):
        raw = message(sender="Alice <alice@customer.example>", to="support@example.com",
                      subject=subject)  # fmt: skip
        with server.smtp() as client:
            client.sendmail("alice@customer.example", ["support@example.com"], raw)
    with server.smtp() as client:
        client.ehlo("relay.test")
        client.mail("x@y.example")
        client.rcpt("nobody@example.com")
    server.flush()
    waiting = json.loads(run("status", "--json", config=config_path).stdout)
    assert waiting["queue"]["queued"] == 2
    assert waiting["oldest_waiting"] is not None and waiting["oldest_waiting_seconds"] >= 0
    assert waiting["rejections_24h"] == {"unknown_mailbox": 1}

    app = server.app
    server.call(app.worker.housekeeping.run_batch(app.worker.batch, app.holder.current))
    after = json.loads(run("status", "--json", config=config_path).stdout)
    assert after["queue"]["queued"] == 0 and after["queue"]["done"] == 2
    assert after["oldest_waiting"] is None
    [batch] = after["batches"]
    assert (batch["owner"], batch["taken"], batch["tickets"], batch["error"]) == (
        app.worker.batch.owner, 2, 2, None,
    )  # fmt: skip

    human = run("status", config=config_path)
    assert human.exit_code == 0
    assert "queue:   queued 0, leased 0, done 2, failed 0, quarantined 0" in human.stdout
    assert "oldest waiting: -" in human.stdout
    assert f"last batch of {app.worker.batch.owner}: " in human.stdout
    assert "taken 2, tickets 2" in human.stdout
    assert "refused in 24h: unknown_mailbox 1" in human.stdout
    assert "outbox:  queued 0, sending 0, sent 0, retrying 0, failed 0" in human.stdout


def test_a_failing_batch_is_recorded_with_its_error(
    server: ServerThread, tmp_path: Path, db_url: str
) -> None:
    app = server.app
    with server.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE queue RENAME TO queue_away")
    try:
        with pytest.raises(sqlalchemy.exc.DatabaseError):
            server.call(app.worker.housekeeping.run_batch(app.worker.batch, app.holder.current))
    finally:
        with server.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE queue_away RENAME TO queue")
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    [batch] = json.loads(run("status", "--json", config=config_path).stdout)["batches"]
    assert batch["taken"] == 0
    assert batch["error"].startswith(("OperationalError: ", "ProgrammingError: "))
    assert "\n" not in batch["error"] and "SELECT" not in batch["error"].upper()
    assert "ERROR" in run("status", config=config_path).stdout
